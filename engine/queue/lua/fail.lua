-- ARGV: prefix, consumer, model, member, entry id, deliveries, job id, retryable (0/1), attempt,
--       max attempts, back-off idle ms, error, error TTL s → 'lost', 'cancelled', 'queued' or 'failed'
local consumer, model, member, id, job_id = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[7]
local key = qkey(model, member)
if not owned(key, id, consumer, ARGV[6]) then return 'lost' end
local attempt, err = ARGV[9], ARGV[12]
local function finish(event, message)
  remove(model, member, id)
  redis.call('DEL', P .. 'error:' .. job_id)
  emit({'event', event, 'job_id', job_id, 'error', message, 'attempt', attempt, 'worker', consumer})
  return event
end
if redis.call('EXISTS', P .. 'cancel:' .. job_id) == 1 then return finish('cancelled', 'cancelled') end
if ARGV[8] == '1' and tonumber(attempt) < tonumber(ARGV[10]) then
  -- Stay pending, with the idle time set so that the entry is taken over once the back-off is over.
  redis.call('SET', P .. 'error:' .. job_id, err, 'EX', tonumber(ARGV[13]))
  redis.call('XCLAIM', key, GROUP, consumer, 0, id, 'IDLE', tonumber(ARGV[11]), 'JUSTID')
  return 'queued'
end
return finish('failed', err)
