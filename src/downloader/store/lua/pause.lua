-- Pause job ARGV[4]: a waiting job (or a multi-file parent, or a running job whose lease ran
-- out: its worker is gone) is paused at once and the ARGV[5] events after it are published
-- (to KEYS); a running one is asked to stop (its worker sees the flag, keeps the partial
-- file and marks it paused). Answers what became of it.
local id = ARGV[4]
local jk = key('job', id)
local status = field(jk, 'status')
if not status then return 'missing' end
if TERMINAL[status] then return 'finished' end
if redis.call('HGET', jk, 'cancel_requested') == 'true' then return 'cancelling' end
if status == 'paused' then return 'already' end
if status == 'running' and redis.call('EXISTS', key('lease', id)) == 1 then
  redis.call('HSET', jk, 'pause_requested', 'true', 'updated_at', NOW)
  return 'requested'
end
-- Its message, if still in the broker, is dropped by the claim; the resume sends another.
forget_dispatch(jk, id, field(jk, 'queue_id'))
move(id, 'paused')
redis.call('HDEL', jk, 'pause_requested')
redis.call('HSET', jk, 'updated_at', NOW)
announce(5, tonumber(ARGV[5]))
return 'paused'
