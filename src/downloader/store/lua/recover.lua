-- Set running job ARGV[4] back to waiting if its lease is gone (its worker died); 1 if it
-- did, once, so two workers looking at the same time do not both queue it again.
local id = ARGV[4]
local jk = key('job', id)
if field(jk, 'status') ~= 'running' then
  redis.call('SREM', key('running'), id)
  return 0
end
if redis.call('EXISTS', key('lease', id)) == 1 then return 0 end
move(id, 'waiting')
redis.call('HSET', jk, 'updated_at', NOW)
return 1
