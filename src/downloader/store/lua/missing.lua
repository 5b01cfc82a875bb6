-- Which of these jobs have no record (see `JobRecords.missing`).
-- ARGV[1] the prefix of a job's key, ARGV[2] on: job ids.
-- Answers the ids whose record does not exist.
local gone = {}
for i = 2, #ARGV do
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 0 then gone[#gone + 1] = ARGV[i] end
end
return gone
