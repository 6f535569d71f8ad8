-- ARGV: prefix, consumer, lease ms, limit, models… (none: every model)
-- Returns {{model, member, entry id, deliveries, {fields…}}, …}
local consumer, lease_ms, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local models = {}
for i = 5, #ARGV do models[#models + 1] = ARGV[i] end
if #models == 0 then models = redis.call('SMEMBERS', P .. 'models') end
local claimed = {}

local function ended(model, member, id, f, event, err, attempts)
  remove(model, member, id)
  redis.call('DEL', P .. 'error:' .. f.job_id)
  emit({'event', event, 'job_id', f.job_id, 'error', err, 'attempt', tostring(attempts), 'worker', consumer})
end

local function admit(model, member, id, flat, deliveries)
  local f = as_table(flat)
  local attempt = tonumber(f.attempts) + deliveries
  if redis.call('EXISTS', P .. 'cancel:' .. f.job_id) == 1 then
    ended(model, member, id, f, 'cancelled', 'cancelled', attempt - 1)
    return false
  end
  if attempt > tonumber(f.max_attempts) then
    local err = redis.call('GET', P .. 'error:' .. f.job_id) or 'lease expired: the engine stopped responding'
    ended(model, member, id, f, 'failed', err, attempt - 1)
    return false
  end
  claimed[#claimed + 1] = {model, member, id, tostring(deliveries), flat}
  emit({'event', 'started', 'job_id', f.job_id, 'attempt', tostring(attempt), 'worker', consumer})
  return true
end

-- Entries of dead engines (and retries whose back-off is over) first: their members have waited longest.
for _, model in ipairs(models) do
  for _, member in ipairs(redis.call('SMEMBERS', P .. 'members:' .. model)) do
    if #claimed >= limit then break end
    local key = qkey(model, member)
    local taken = redis.call('XAUTOCLAIM', key, GROUP, consumer, lease_ms, '0-0', 'COUNT', limit - #claimed)
    for _, entry in ipairs(taken[2]) do
      local p = redis.call('XPENDING', key, GROUP, entry[1], entry[1], 1)
      admit(model, member, entry[1], entry[2], tonumber(p[1][4]))
    end
  end
end

-- Then new work, one job at a time: fewest running first, then the oldest head of line.
local all_models = redis.call('SMEMBERS', P .. 'models')
local running = {}
local function running_of(member)
  local n = running[member]
  if n == nil then
    n = 0
    for _, m in ipairs(all_models) do
      local key = qkey(m, member)
      if redis.call('EXISTS', key) == 1 then n = n + redis.call('XPENDING', key, GROUP)[1] end
    end
    running[member] = n
  end
  return n
end
local heads = {}
for _, model in ipairs(models) do
  local w = redis.call('ZRANGE', P .. 'waiting:' .. model, 0, -1, 'WITHSCORES')
  for i = 1, #w, 2 do heads[#heads + 1] = {model = model, member = w[i], created = tonumber(w[i + 1])} end
end
while #claimed < limit and #heads > 0 do
  local best, best_i, best_running
  for i, h in ipairs(heads) do
    local r = running_of(h.member)
    if best == nil or r < best_running or (r == best_running and (h.created < best.created
        or (h.created == best.created and h.member < best.member))) then
      best, best_i, best_running = h, i, r
    end
  end
  local key = qkey(best.model, best.member)
  local entry = nil
  if redis.call('EXISTS', key) == 1 then
    local read = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', 1, 'STREAMS', key, '>')
    entry = read and read[1][2][1]
  end
  local nxt = {}
  if entry then nxt = redis.call('XRANGE', key, '(' .. entry[1], '+', 'COUNT', 1) end
  if #nxt > 0 then
    best.created = tonumber(as_table(nxt[1][2]).created)
    redis.call('ZADD', P .. 'waiting:' .. best.model, best.created, best.member)
  else
    redis.call('ZREM', P .. 'waiting:' .. best.model, best.member)
    table.remove(heads, best_i)
  end
  if entry and admit(best.model, best.member, entry[1], entry[2], 1) then
    running[best.member] = best_running + 1
  end
end
return claimed
