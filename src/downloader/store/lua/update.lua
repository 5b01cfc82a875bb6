-- Set fields of job ARGV[4], then publish its events: ARGV[5] a count m of events and the m
-- events (to KEYS); then field, JSON value pairs. A job removed meanwhile stays gone (0).
local jk = key('job', ARGV[4])
if redis.call('EXISTS', jk) == 0 then return 0 end
local events = tonumber(ARGV[5])
set_fields(jk, 6 + events)
announce(5, events)
return 1
