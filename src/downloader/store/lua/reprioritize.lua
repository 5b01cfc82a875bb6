-- Give job ARGV[4] the priority ARGV[5] (JSON) and the broker level ARGV[6] ('' for a
-- multi-file parent, which is never sent). A waiting job whose level changes answers 'moved':
-- the caller sends it again at its new level, and the claim drops the message at the old
-- one. Otherwise the priority is recorded ('recorded'), or nothing is done ('missing',
-- 'finished').
local id = ARGV[4]
local jk = key('job', id)
local status = field(jk, 'status')
if not status then return 'missing' end
if TERMINAL[status] then return 'finished' end
redis.call('HSET', jk, 'priority', ARGV[5], 'updated_at', NOW)
if ARGV[6] == '' then return 'recorded' end
local old = field(jk, 'level')
local level = tonumber(ARGV[6])
if old == level then return 'recorded' end
if status == 'waiting' then forget_dispatch(jk, id, field(jk, 'queue_id')) end
redis.call('HSET', jk, 'level', ARGV[6])
if status == 'waiting' then return 'moved' end
return 'recorded'
