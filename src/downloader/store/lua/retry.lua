-- Count one more attempt of job ARGV[4], whose last failure was ARGV[5] (its error_type).
local jk = key('job', ARGV[4])
if redis.call('EXISTS', jk) == 0 then return 0 end
redis.call('HINCRBY', jk, 'attempts', 1)
redis.call('HSET', jk, 'last_error', ARGV[5], 'updated_at', NOW)
redis.call('HINCRBY', key('stats'), 'retries', 1)
return 1
