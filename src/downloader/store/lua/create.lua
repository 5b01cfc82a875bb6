-- Write a batch of new jobs: each record's hash and its two index entries (the queue's jobs,
-- the queue's jobs in the record's status), the queue's name, and the namespace's marker if
-- it has none. The records come as one JSON argument, so that the client packs one string
-- per batch rather than some twenty per job (see `JobRecords.create`).
-- KEYS[1] the queue's jobs, KEYS[2] the queue names, KEYS[3] the marker.
-- ARGV[1] the prefix of a job's key, ARGV[2] the prefix of the queue's status indexes,
-- ARGV[3] the queue id, ARGV[4] a marker value, ARGV[5] the records: a JSON array of
-- [id, status, field, value, field, value, ...], every item a string (values are JSON texts);
-- ARGV[6] on: the commands to run after the records (the tokens, the broker messages that
-- queue the jobs), each as its number of words, then its words (each command unpacked whole:
-- a batch's LPUSH of 1,000 messages, its ZADD of 1,000 notes, are well within Lua's ~8,000).
-- Answers the number of records written.
local records = cjson.decode(ARGV[5])
local all, by_status = {}, {}
for _, record in ipairs(records) do
  local id, status = record[1], record[2]
  redis.call('HSET', ARGV[1] .. id, unpack(record, 3))
  local members = by_status[status]
  if members == nil then
    members = {}
    by_status[status] = members
  end
  members[#members + 1] = id
  members[#members + 1] = id
  all[#all + 1] = id
  all[#all + 1] = id
end

-- One ZADD per index, in slices that stay within Lua's limit on unpacked arguments.
local function zadd(key, members)
  for first = 1, #members, 2000 do
    redis.call('ZADD', key, unpack(members, first, math.min(first + 1999, #members)))
  end
end

if #all > 0 then zadd(KEYS[1], all) end
for status, members in pairs(by_status) do zadd(ARGV[2] .. status, members) end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4], 'NX')

local word = 6
while word <= #ARGV do
  local count = tonumber(ARGV[word])
  redis.call(unpack(ARGV, word + 1, word + count))
  word = word + count + 1
end
return #records
