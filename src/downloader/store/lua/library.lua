-- The library every job script starts with (store/scripts.py prepends it, after the key
-- templates KEY and the histogram's BUCKETS it generates from store/keys.py and the store).
-- ARGV[1..3] are the namespace, the time as a JSON ISO string and as epoch seconds; ARGV[4]
-- is the job id. A script finds a job's other keys from its record (its queue, its parent),
-- so it cannot name them all in KEYS beforehand: it builds them with `key`, from the
-- templates, and one call updates a job, its indexes, its parent and the stats together.
local NS, NOW, EPOCH = ARGV[1], ARGV[2], tonumber(ARGV[3])

-- The key `KEY[name]` of this namespace, for the template's arguments.
local function key(name, ...)
  return string.format(KEY[name], NS, ...)
end

-- Publish the `count` events at ARGV[at + 1 ..] to every channel in KEYS; answers the index
-- of the first ARGV after them. An event follows the writes it reports (called last).
local function announce(at, count)
  for i = at + 1, at + count do
    for _, channel in ipairs(KEYS) do redis.call('PUBLISH', channel, ARGV[i]) end
  end
  return at + count + 1
end

local TERMINAL = {completed = true, error = true}

-- A field of a job's record (a JSON value); nil when missing or null.
local function field(jk, name)
  local raw = redis.call('HGET', jk, name)
  if not raw then return nil end
  local value = cjson.decode(raw)
  if value == cjson.null then return nil end
  return value
end

-- The job's dispatch note leaves its level's set (the store wrote the level with the job).
local function forget_dispatch(jk, id, q)
  local level = field(jk, 'level')
  if level then redis.call('ZREM', key('dispatched', q, level), id) end
end

-- A part's byte counts are summed into its parent's by applying each change's difference.
local function set_count(jk, parent, name, value)
  if parent then
    local old = tonumber(redis.call('HGET', jk, name) or '0') or 0
    local delta = (tonumber(value) or 0) - old
    if delta ~= 0 then redis.call('HINCRBY', key('job', parent), name, delta) end
  end
  redis.call('HSET', jk, name, value)
end

-- Set the field, JSON value pairs at ARGV[first ..].
local function set_fields(jk, first)
  local parent = field(jk, 'parent_id')
  for i = first, #ARGV, 2 do
    local name, value = ARGV[i], ARGV[i + 1]
    if name == 'bytes' or name == 'total_bytes' then
      set_count(jk, parent, name, value)
    else
      redis.call('HSET', jk, name, value)
    end
  end
end

-- Move job `id` to status `new` with every index, its parent's counters and the stats.
local function move(id, new, cancelled)
  local jk = key('job', id)
  local old = field(jk, 'status')
  local q = field(jk, 'queue_id')
  if old ~= new then
    redis.call('ZREM', key('queue_status', q, old), id)
    redis.call('ZADD', key('queue_status', q, new), id, id)
    redis.call('HSET', jk, 'status', cjson.encode(new))
  end
  if new ~= 'running' then redis.call('SREM', key('running'), id) end
  -- A job's token is kept only while the job may still run (a handed-back job resumes).
  if TERMINAL[new] then redis.call('DEL', key('secret', id)) end
  if not TERMINAL[new] or TERMINAL[old] then return old end
  local outcome = new
  if cancelled then
    outcome = 'cancelled'
    redis.call('ZADD', key('queue_status', q, 'cancelled'), id, id)
  end
  redis.call('ZADD', key('queue_ended', q), EPOCH, id)
  forget_dispatch(jk, id, q)
  local stats = key('stats')
  redis.call('HINCRBY', stats, 'ended:' .. q .. ':' .. outcome, 1)
  -- Bytes are counted once, where they were downloaded: a multi-file parent's are its
  -- parts' (summed into it), which counted them when each completed.
  if new == 'completed' and field(jk, 'kind') ~= 'multifile' then
    redis.call('HINCRBY', stats, 'bytes', tonumber(redis.call('HGET', jk, 'bytes') or '0') or 0)
  end
  local started = tonumber(redis.call('HGET', jk, 'started_epoch') or '')
  if started and field(jk, 'kind') ~= 'multifile' then
    local seconds = math.max(EPOCH - started, 0)
    local bucket = '+Inf'
    for _, le in ipairs(BUCKETS) do
      if seconds <= le then bucket = tostring(le) break end
    end
    redis.call('HINCRBY', stats, 'duration_le:' .. bucket, 1)
    redis.call('HINCRBYFLOAT', stats, 'duration_sum', seconds)
  end
  local parent = field(jk, 'parent_id')
  if parent then
    local pk = key('job', parent)
    local counter = {completed = 'parts_done', error = 'parts_failed',
                     cancelled = 'parts_cancelled'}
    redis.call('HINCRBY', pk, counter[outcome], 1)
    if outcome ~= 'completed' then redis.call('HSETNX', pk, 'culprit', id) end
  end
  return old
end

-- A URL's host as Python's urlsplit(url).hostname has it, lower case (nil: not http(s)):
-- the key of its connection slots. The caller compares it with its own reading.
local function host_of(url)
  local netloc = string.match(url, '^[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)')
  if not netloc then return nil end
  local hostinfo = string.match(netloc, '^.*@(.*)$') or netloc
  local host = string.match(hostinfo, '^%[([^%]]*)%]') or string.match(hostinfo, '^[^:]*')
  if host == '' then return nil end
  return string.lower(host)
end

-- Take a connection slot of `host` for `holder` when its cap, its pause, its request rate and
-- the waiters ranked before `rank` allow. Slots are leases: a holder's entry runs out unless
-- renewed. `lease` and `patience` (how long a waiter counts) are ms, `rps` requests per
-- second (0: any), `rank` a number as text (lower first); `queue`: a holder refused for a
-- full host waits in line. Answers {outcome, slots in use, ms, probe}: outcome 1 taken, 0
-- full (ms 0), 2 paused for ms (or another connection probes the host after its pause), 3
-- too many requests lately: try again in ms; probe 1 when the slot taken is the one that
-- probes the host.
local function take_slot(host, holder, lease, cap, rps, rank, patience, queue)
  local slots, waiters = key('host_slots', host), key('host_waiters', host)
  local waiters_until = key('host_waiters_until', host)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  local used = redis.call('ZCARD', slots)
  local pause = redis.call('PTTL', key('host_pause', host))
  if pause > 0 then return {2, used, pause, 0} end
  local gone = redis.call('ZRANGEBYSCORE', waiters_until, '-inf', now)
  if #gone > 0 then
    redis.call('ZREM', waiters, unpack(gone))
    redis.call('ZREM', waiters_until, unpack(gone))
  end
  local ahead = redis.call('ZCOUNT', waiters, '-inf', '(' .. rank)
  if used + ahead >= cap then
    if queue then
      redis.call('ZADD', waiters, rank, holder)
      redis.call('ZADD', waiters_until, now + patience, holder)
      redis.call('PEXPIRE', waiters, patience * 2)
      redis.call('PEXPIRE', waiters_until, patience * 2)
    end
    return {0, used, 0, 0}
  end
  local probe = 0
  if redis.call('EXISTS', key('host_probe', host)) == 1 then
    local prober = key('host_prober', host)
    if not redis.call('SET', prober, holder, 'NX', 'PX', 5000) then
      if redis.call('GET', prober) ~= holder then return {2, used, 500, 0} end
    end
    probe = 1
  end
  if rps > 0 then
    local requests = key('host_requests', host)
    local bucket = redis.call('HMGET', requests, 'tokens', 'at')
    local room = math.max(1, rps)
    local tokens = tonumber(bucket[1]) or room
    local at = tonumber(bucket[2]) or now
    tokens = math.min(room, tokens + (now - at) * rps / 1000)
    if tokens < 1 then
      redis.call('HSET', requests, 'tokens', tostring(tokens), 'at', now)
      redis.call('PEXPIRE', requests, 60000)
      return {3, used, math.ceil((1 - tokens) * 1000 / rps), 0}
    end
    redis.call('HSET', requests, 'tokens', tostring(tokens - 1), 'at', now)
    redis.call('PEXPIRE', requests, 60000)
  end
  redis.call('ZREM', waiters, holder)
  redis.call('ZREM', waiters_until, holder)
  redis.call('ZADD', slots, now + lease, holder)
  redis.call('PEXPIRE', slots, lease * 2)
  return {1, used + 1, 0, probe}
end
