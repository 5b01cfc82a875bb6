-- Store job ARGV[4]'s byte counts (ARGV[5] of ARGV[6]) and answer whether it goes on: 0 it
-- does, 1 it was cancelled, 2 its record is gone, 3 it was paused.
local jk = key('job', ARGV[4])
if redis.call('EXISTS', jk) == 0 then return 2 end
local parent = field(jk, 'parent_id')
set_count(jk, parent, 'bytes', ARGV[5])
set_count(jk, parent, 'total_bytes', ARGV[6])
redis.call('HSET', jk, 'updated_at', NOW)
if redis.call('HGET', jk, 'cancel_requested') == 'true' then return 1 end
if redis.call('HGET', jk, 'pause_requested') == 'true' then return 3 end
return 0
