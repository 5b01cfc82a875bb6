-- KEYS: the path keys; ARGV[1]: the job key prefix; ARGV[2]: a time to live in ms for a
-- reservation made before its job's record exists (0: none); ARGV[2 + i]: the job for KEYS[i].
-- Answers 0 when every path was reserved for its job, else {index of a path, its holder}.
-- A holder is live while its job waits, runs or is paused, or while its reservation still
-- counts down (its enqueue has not written the record yet); anything else is stale and taken
-- over.
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[i + 2] then
    local status = redis.call('HGET', ARGV[1] .. holder, 'status')
    if status == '"waiting"' or status == '"running"' or status == '"paused"' or
       (not status and redis.call('PTTL', key) > 0) then
      return {i, tonumber(holder)}
    end
  end
end
for i, key in ipairs(KEYS) do
  if ARGV[2] ~= '0' then
    redis.call('SET', key, ARGV[i + 2], 'PX', ARGV[2])
  else
    redis.call('SET', key, ARGV[i + 2])
  end
end
return 0
