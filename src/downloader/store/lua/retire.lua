-- KEYS[1] the queue's job index, KEYS[2] the set of queue names, KEYS[3] the stats hash,
-- KEYS[4..] the queue's dispatch notes (one per level); ARGV[1] the queue id.
-- A queue's name leaves the set of queue names (which the orphan watch walks every few
-- seconds) once the queue holds no job, so the set does not grow with every `get` ever run
-- on its own queue. One script, so a job created meanwhile is either seen here (the name
-- stays) or created after it (and adds the name back: `create` adds it in the same
-- transaction as the job). The dispatch notes of a queue without jobs are of removed jobs:
-- they go too, and so do the queue's ended-jobs counters (its series in /metrics end with
-- it, rather than the stats hash growing with every get).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local q = ARGV[1]
redis.call('SREM', KEYS[2], q)
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
local ended = 'ended:' .. q .. ':'
redis.call('HDEL', KEYS[3], ended .. 'completed', ended .. 'error', ended .. 'cancelled')
return 1
