-- Take a connection slot of a host when its cap, its pause, its request rate and the waiters
-- ranked before this one allow. Slots are leases: a holder's entry runs out unless renewed.
-- KEYS[1] the host's slots, KEYS[2] its pause, KEYS[3] its request bucket, KEYS[4] its
-- waiters by rank, KEYS[5] its waiters by when they stop counting, KEYS[6] its probe (set
-- after a pause until a connection got an answer), KEYS[7] the holder probing it.
-- ARGV[1] the holder, ARGV[2] the lease (ms), ARGV[3] the cap, ARGV[4] requests per second
-- (0: any), ARGV[5] the holder's rank (lower first), ARGV[6] how long a waiter counts (ms).
-- Answers {outcome, slots in use, ms, probe}: outcome 1 taken, 0 full (ms 0), 2 paused for
-- ms (or another connection probes the host after its pause), 3 too many requests lately:
-- try again in ms; probe 1 when the slot taken is the one that probes the host.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder, lease, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rps, rank, patience = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local used = redis.call('ZCARD', KEYS[1])
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return {2, used, pause, 0} end
local gone = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
if #gone > 0 then
  redis.call('ZREM', KEYS[4], unpack(gone))
  redis.call('ZREM', KEYS[5], unpack(gone))
end
local ahead = redis.call('ZCOUNT', KEYS[4], '-inf', '(' .. ARGV[5])
if used + ahead >= cap then
  redis.call('ZADD', KEYS[4], rank, holder)
  redis.call('ZADD', KEYS[5], now + patience, holder)
  redis.call('PEXPIRE', KEYS[4], patience * 2)
  redis.call('PEXPIRE', KEYS[5], patience * 2)
  return {0, used, 0, 0}
end
local probe = 0
if redis.call('EXISTS', KEYS[6]) == 1 then
  if not redis.call('SET', KEYS[7], holder, 'NX', 'PX', 5000) then
    if redis.call('GET', KEYS[7]) ~= holder then return {2, used, 500, 0} end
  end
  probe = 1
end
if rps > 0 then
  local bucket = redis.call('HMGET', KEYS[3], 'tokens', 'at')
  local room = math.max(1, rps)
  local tokens = tonumber(bucket[1]) or room
  local at = tonumber(bucket[2]) or now
  tokens = math.min(room, tokens + (now - at) * rps / 1000)
  if tokens < 1 then
    redis.call('HSET', KEYS[3], 'tokens', tostring(tokens), 'at', now)
    redis.call('PEXPIRE', KEYS[3], 60000)
    return {3, used, math.ceil((1 - tokens) * 1000 / rps), 0}
  end
  redis.call('HSET', KEYS[3], 'tokens', tostring(tokens - 1), 'at', now)
  redis.call('PEXPIRE', KEYS[3], 60000)
end
redis.call('ZREM', KEYS[4], holder)
redis.call('ZREM', KEYS[5], holder)
redis.call('ZADD', KEYS[1], now + lease, holder)
redis.call('PEXPIRE', KEYS[1], lease * 2)
return {1, used + 1, 0, probe}
