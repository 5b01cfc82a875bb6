-- Claim job ARGV[4] for the attempt ARGV[5], with a lease of ARGV[6] ms: refuse a finished,
-- cancelled, paused or leased job, and a waiting one whose message came at the priority level
-- ARGV[7] ('' unknown) when its priority has moved it to another level since (a message sent
-- at the new level is on its way); else take the lease and mark it running. Answers the
-- decision with the job's record and token as they are then (no second round trip).
local function decide(id, owner, lease_ms, sent_level)
  local jk = key('job', id)
  local status = field(jk, 'status')
  if not status then return 'missing' end
  if TERMINAL[status] then return 'finished' end
  if redis.call('HGET', jk, 'cancel_requested') == 'true' then return 'cancelled' end
  if status == 'paused' then return 'paused' end
  local level = field(jk, 'level')
  if status == 'waiting' and sent_level ~= '' and level and tonumber(sent_level) ~= level then
    return 'stale'
  end
  local lease = key('lease', id)
  local holder = redis.call('GET', lease)
  if holder and holder ~= owner then return 'leased' end
  redis.call('SET', lease, owner, 'PX', lease_ms)
  local seq = redis.call('INCR', key('job_sequence')) - 1
  move(id, 'running')
  redis.call('HSET', jk, 'job_sequence', tostring(seq), 'worker', cjson.encode(owner),
             'updated_at', NOW)
  redis.call('HSETNX', jk, 'started_epoch', ARGV[3])
  if not field(jk, 'job_started') then redis.call('HSET', jk, 'job_started', NOW) end
  redis.call('HINCRBY', jk, 'attempts', 1)
  redis.call('SADD', key('running'), id)
  forget_dispatch(jk, id, field(jk, 'queue_id'))
  return 'claimed'
end

-- The first connection slot of a claimed job, taken with its claim when its source's host
-- has one free now (never waiting in line: the transfer asks again for a refused one).
-- ARGV[8] the holder ('' none wanted), ARGV[9] the lease (ms), ARGV[10] how long a waiter
-- counts (ms), ARGV[11] the caps, JSON {host: [cap, requests per second]} with '*' for hosts
-- not named. Answers {host, take_slot's answer...}, or false.
local function first_slot(jk, holder)
  local source = field(jk, 'source')
  local host = source and host_of(source)
  if not host then return false end
  local caps = cjson.decode(ARGV[11])
  local cap = caps[host] or caps['*']
  local priority = math.min(math.max(tonumber(field(jk, 'priority')) or 0, 0), 99)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local rank = string.format('%.17g', priority * 1e13 + now)
  local answer = take_slot(host, holder, tonumber(ARGV[9]), cap[1], cap[2], rank,
                           tonumber(ARGV[10]), false)
  return {host, unpack(answer)}
end

local id = ARGV[4]
local decision = decide(id, ARGV[5], ARGV[6], ARGV[7] or '')
local slot = false
if decision == 'claimed' and (ARGV[8] or '') ~= '' then
  slot = first_slot(key('job', id), ARGV[8])
end
return {decision, redis.call('HGETALL', key('job', id)), redis.call('GET', key('secret', id)),
        slot}
