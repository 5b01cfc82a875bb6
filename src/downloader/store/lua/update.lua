-- Set fields of job ARGV[4], then publish its events: ARGV[5] a count m of events and the m
-- events (to KEYS); then field, JSON value pairs. A job removed meanwhile stays gone (0), and
-- a job that has ended takes nothing more (0): its end is the last event it publishes.
local jk = key('job', ARGV[4])
local status = field(jk, 'status')
if not status or TERMINAL[status] then return 0 end
local events = tonumber(ARGV[5])
set_fields(jk, 6 + events)
announce(5, events)
return 1
