-- A host answered 429 or 503: the fleet leaves it alone for a while. The pause is what the
-- host asked (Retry-After), else an exponential backoff on its recent strikes; both capped.
-- A longer pause in force stays. After the pause one connection probes the host before the
-- others follow (KEYS[3] set until it got an answer; KEYS[4], its holder, cleared here).
-- KEYS[1] the host's pause, KEYS[2] its strikes, KEYS[3] its probe, KEYS[4] its prober.
-- ARGV[1] Retry-After in ms (-1: none), ARGV[2] the first backoff (ms), ARGV[3] the cap (ms).
-- Answers {1, ms} for a new pause of ms, {0, ms} when the pause in force lasts ms more.
local asked, base, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local strikes = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], cap * 4)
local pause = asked
if pause < 0 then pause = base * 2 ^ math.min(strikes - 1, 30) end
pause = math.floor(math.min(pause, cap))
local left = redis.call('PTTL', KEYS[1])
if left >= pause then return {0, left} end
if pause <= 0 then return {0, 0} end
redis.call('SET', KEYS[1], pause, 'PX', pause)
redis.call('SET', KEYS[3], 1, 'PX', pause + cap)
redis.call('DEL', KEYS[4])
return {1, pause}
