-- KEYS[1] the lease, KEYS[2] the job's record; ARGV[1] the owner, ARGV[2] the new lease in
-- ms. Answers 1 renewed, 0 taken or run out, 2 record gone.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 2 end
return 0
