-- Multi-file parent ARGV[4] stops its parts (a part failed, or the parent was cancelled): 1
-- for the one caller that marks it so (that caller cancels the parts), 0 when it was marked
-- already or has ended. The parent itself ends once every part has (see worker/parents.py).
local jk = key('job', ARGV[4])
local status = field(jk, 'status')
if not status or TERMINAL[status] then return 0 end
if redis.call('HGET', jk, 'cancel_requested') == 'true' then return 0 end
redis.call('HSET', jk, 'cancel_requested', 'true', 'updated_at', NOW)
return 1
