-- Resume job ARGV[4]: a paused job waits again (a multi-file parent that had started runs
-- again) and the ARGV[5] events after it are published (to KEYS); the caller queues it. A
-- running job whose pause its worker has not acted on yet just goes on. Answers what became
-- of it.
local id = ARGV[4]
local jk = key('job', id)
local status = field(jk, 'status')
if not status then return 'missing' end
if TERMINAL[status] then return 'finished' end
if redis.call('HGET', jk, 'cancel_requested') == 'true' then return 'cancelling' end
if status == 'running' and redis.call('HGET', jk, 'pause_requested') == 'true' then
  redis.call('HDEL', jk, 'pause_requested')
  redis.call('HSET', jk, 'updated_at', NOW)
  return 'withdrawn'
end
if status ~= 'paused' then return 'active' end
local new = 'waiting'
if field(jk, 'kind') == 'multifile' and field(jk, 'job_started') then new = 'running' end
move(id, new)
redis.call('HDEL', jk, 'pause_requested')
redis.call('HSET', jk, 'updated_at', NOW)
announce(5, tonumber(ARGV[5]))
return 'resumed'
