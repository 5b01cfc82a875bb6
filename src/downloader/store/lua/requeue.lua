-- Retry job ARGV[4], which failed or was cancelled: it waits again, its failure forgotten
-- (a multi-file parent's part counters too, but for the parts that completed), and the
-- ARGV[5] events after it are published (to KEYS); the caller queues it. Answers
-- 'retried', or why not: 'missing', 'completed', 'active' (it has not ended).
local id = ARGV[4]
local jk = key('job', id)
local status = field(jk, 'status')
if not status then return 'missing' end
if status == 'completed' then return 'completed' end
if status ~= 'error' then return 'active' end
local q = field(jk, 'queue_id')
redis.call('ZREM', key('queue_status', q, 'cancelled'), id)
redis.call('ZREM', key('queue_ended', q), id)
redis.call('HDEL', jk, 'cancelled', 'cancel_requested', 'pause_requested', 'error_type',
           'error', 'failure', 'job_ended', 'culprit', 'parts_failed', 'parts_cancelled')
move(id, 'waiting')
redis.call('HSET', jk, 'updated_at', NOW)
announce(5, tonumber(ARGV[5]))
return 'retried'
