-- ARGV: prefix, model, member, created ms, job id, entry fields…
local model, member, created, job_id = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
local key = qkey(model, member)
if redis.call('EXISTS', key) == 0 then redis.call('XGROUP', 'CREATE', key, GROUP, '0', 'MKSTREAM') end
-- A job published again (an operator's retry) starts clean.
redis.call('DEL', P .. 'cancel:' .. job_id, P .. 'error:' .. job_id)
local id = redis.call('XADD', key, '*', unpack(fields))
-- NX: when the member already has jobs waiting, the oldest of them stays the head of their line.
redis.call('ZADD', P .. 'waiting:' .. model, 'NX', created, member)
redis.call('SADD', P .. 'members:' .. model, member)
redis.call('SADD', P .. 'models', model)
return id
