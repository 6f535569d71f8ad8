-- ARGV: prefix, consumer, model, member, entry id, deliveries, job id → 0 lost, 1 held, 2 cancel requested
local key = qkey(ARGV[3], ARGV[4])
if not owned(key, ARGV[5], ARGV[2], ARGV[6]) then return 0 end
-- The owner's XCLAIM with JUSTID resets the idle time and leaves the delivery count, the fencing
-- token, as it is.
redis.call('XCLAIM', key, GROUP, ARGV[2], 0, ARGV[5], 'JUSTID')
if redis.call('EXISTS', P .. 'cancel:' .. ARGV[7]) == 1 then return 2 end
return 1
