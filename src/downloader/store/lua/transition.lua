-- Move job ARGV[4] to status ARGV[5]. ARGV[6] says when it applies: 'any' job that exists,
-- 'once' a job not finished yet, 'waiting' a waiting job, 'pausing' a running job whose pause
-- is still asked for (a resume may have withdrawn it); ARGV[7] the lease owner to release
-- ('' none); ARGV[8] a count n of path reservation keys to release (those the job holds)
-- and the n keys; then a count s of connection slots to give back and s pairs of a host's
-- slots key and a holder; then a count m of events and the m events (to KEYS); then field,
-- JSON value pairs to set. Answers 1 when it moved the job, 0 when it did nothing.
local id, new, mode, owner = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local jk = key('job', id)
local status = field(jk, 'status')
if not status then return 0 end
if mode == 'once' and TERMINAL[status] then return 0 end
if mode == 'waiting' and status ~= 'waiting' then return 0 end
if mode == 'pausing' and (status ~= 'running' or
                          redis.call('HGET', jk, 'pause_requested') ~= 'true') then
  return 0
end
local paths = tonumber(ARGV[8])
local slots_at = 9 + paths
local slots = tonumber(ARGV[slots_at])
local events_at = slots_at + 2 * slots + 1
local events = tonumber(ARGV[events_at])
set_fields(jk, events_at + events + 1)
move(id, new, TERMINAL[new] and redis.call('HGET', jk, 'cancelled') == 'true')
local lease = key('lease', id)
if owner ~= '' and redis.call('GET', lease) == owner then
  redis.call('DEL', lease)
end
for i = 9, 8 + paths do
  if redis.call('GET', ARGV[i]) == id then redis.call('DEL', ARGV[i]) end
end
for i = slots_at + 1, slots_at + 2 * slots, 2 do
  redis.call('ZREM', ARGV[i], ARGV[i + 1])
end
announce(events_at, events)
return 1
