-- Take a connection slot of host ARGV[4] for the holder ARGV[5] (see the library's
-- `take_slot`), or wait in its line: ARGV[6] the lease (ms), ARGV[7] the cap, ARGV[8]
-- requests per second (0: any), ARGV[9] the holder's rank (lower first), ARGV[10] how long a
-- waiter counts (ms).
return take_slot(ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
                 ARGV[9], tonumber(ARGV[10]), true)
