-- ARGV: prefix, consumer, model, member, entry id, deliveries, created ms, entry fields… → 1 / 0
local model, member, id = ARGV[3], ARGV[4], ARGV[5]
local key = qkey(model, member)
if not owned(key, id, ARGV[2], ARGV[6]) then return 0 end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
-- Acked and added again rather than left pending: a takeover would count an attempt, and a shutdown
-- is not the job's fault. Added before anything can delete the (then perhaps empty) stream.
redis.call('XACK', key, GROUP, id)
redis.call('XDEL', key, id)
redis.call('XADD', key, '*', unpack(fields))
redis.call('ZADD', P .. 'waiting:' .. model, 'NX', ARGV[7], member)
return 1
