-- KEYS: path keys; ARGV[i]: the job for KEYS[i]. A path another job holds by now is left
-- to it.
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then redis.call('DEL', key) end
end
return 0
