-- Take a slice of bytes from every bandwidth bucket named, or none.
-- Each bucket refills at its rate and holds at most a quarter second of it (at least the
-- slice); a new bucket starts with one slice.
-- KEYS the buckets; ARGV[1] the slice (bytes), ARGV[1 + i] the rate of KEYS[i] (bytes/s).
-- Answers {bytes granted, ms to wait}: the slice and 0 when every bucket held it, else 0 and
-- how long until the emptiest will.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local want = tonumber(ARGV[1])
local levels = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[i + 1])
  local room = math.max(rate / 4, want)
  local bucket = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(bucket[1]) or want
  local at = tonumber(bucket[2]) or now
  tokens = math.min(room, tokens + math.max(0, now - at) * rate / 1000)
  levels[i] = tokens
  if tokens < want then
    wait = math.max(wait, math.ceil((want - tokens) * 1000 / rate))
  end
end
for i, key in ipairs(KEYS) do
  local left = levels[i]
  if wait == 0 then left = left - want end
  redis.call('HSET', key, 'tokens', tostring(left), 'at', now)
  redis.call('PEXPIRE', key, 60000)
end
if wait == 0 then return {want, 0} end
return {0, wait}
