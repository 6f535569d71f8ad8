-- ARGV: prefix, consumer, model, member, entry id, deliveries, job id, result fields… → 1 done, 0 lost
local model, member, id = ARGV[3], ARGV[4], ARGV[5]
if not owned(qkey(model, member), id, ARGV[2], ARGV[6]) then return 0 end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
emit(fields)
remove(model, member, id)
redis.call('DEL', P .. 'error:' .. ARGV[7])
return 1
