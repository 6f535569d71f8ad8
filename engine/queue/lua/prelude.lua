-- Shared by every script below: loaded in front of each one (see redis.py, _script).
local P = ARGV[1]
local GROUP = 'engines'
local function qkey(model, member) return P .. 'q:' .. model .. ':' .. member end
local function as_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function emit(fields) redis.call('XADD', P .. 'results', '*', unpack(fields)) end
-- Acked entries are deleted, and an empty stream goes with its group: the streams then hold exactly
-- the waiting and running jobs, and dead engines' consumer names do not pile up.
local function remove(model, member, id)
  local key = qkey(model, member)
  redis.call('XACK', key, GROUP, id)
  redis.call('XDEL', key, id)
  if redis.call('XLEN', key) == 0 then
    redis.call('DEL', key)
    redis.call('ZREM', P .. 'waiting:' .. model, member)
    redis.call('SREM', P .. 'members:' .. model, member)
    if redis.call('SCARD', P .. 'members:' .. model) == 0 then redis.call('SREM', P .. 'models', model) end
  end
end
-- The fencing check: still pending, with this owner, and not delivered again since it was claimed.
local function owned(key, id, consumer, deliveries)
  if redis.call('EXISTS', key) == 0 then return false end
  local p = redis.call('XPENDING', key, GROUP, id, id, 1)
  return #p == 1 and p[1][2] == consumer and tonumber(p[1][4]) == tonumber(deliveries)
end
