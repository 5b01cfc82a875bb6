-- Cancel job ARGV[4]: a waiting job (or a running one whose lease ran out: its worker is
-- gone) ends at once, as an error with `cancelled`, error_type ARGV[5] and failure ARGV[6];
-- a running one is asked to stop (its worker sees the flag). Answers what became of it.
local id = ARGV[4]
local jk = key('job', id)
local status = field(jk, 'status')
if not status then return 'missing' end
if TERMINAL[status] then return 'finished' end
redis.call('HSET', jk, 'cancel_requested', 'true', 'updated_at', NOW)
if status == 'running' and redis.call('EXISTS', key('lease', id)) == 1 then
  return 'requested'
end
redis.call('HSET', jk, 'cancelled', 'true', 'error_type', ARGV[5], 'failure', ARGV[6],
           'job_ended', NOW)
move(id, 'error', true)
return 'cancelled'
