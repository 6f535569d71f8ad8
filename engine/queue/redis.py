"""The many-host queue: Redis Streams consumer groups behind the same interface as the SQLite queue.

Engines touch nothing but Redis: no shared disk, no shared database. The bot publishes the job rows
it has committed to SQLite, and applies what engines report back (``pump``).

Keys, all under one prefix (``atelier:`` by default):

``q:{model}:{member}``
    One stream per member and model, consumer group ``engines``. An acked entry is deleted at once,
    so a stream holds exactly that member's waiting and running jobs; an empty stream is deleted with
    its group. Separate streams are what make the claim fair (below) and let an engine take only the
    models it has loaded without touching anyone else's entries.
``waiting:{model}``
    Sorted set: member → creation time (ms) of that member's oldest job not yet delivered.
``members:{model}``, ``models``
    Sets of the streams that exist, so claims and status never SCAN the keyspace.
``cancel:{job}``, ``error:{job}``
    The bot's cancel flag; the last retryable error of a job waiting for its next attempt.
``results``
    Stream of events from engines to the bot (started, progress, succeeded with the PNG bytes, failed,
    cancelled), consumer group ``bots``: with several bot processes each event is applied by one.
``workers``, ``worker:{id}``
    Hash of worker records, and a key per worker with a TTL that its heartbeat renews.

Fairness: a claim serves the member with the fewest running jobs first, ties going to the member whose
oldest waiting job is oldest, re-evaluated after each job it hands out. That is the SQLite backend's
order (a member's k-th waiting job gets turn running + k), so a member with 40 requests queued cannot
push everyone else back. Running = entries pending in the member's streams, read from the consumer
groups themselves, so there is no counter that a crash could leave wrong.

Leases are the pending entries: an entry is leased to the consumer (the engine's worker id) it was
delivered to. The owner renews it with XCLAIM … JUSTID, which resets the idle time without counting a
delivery; an entry idle longer than the lease belongs to a dead or stuck engine and any engine takes it
over with XAUTOCLAIM, which counts a delivery. The fencing token is (consumer, entry, delivery count):
every renewal and settlement is a Lua script that first checks the entry is still pending with that
owner and that count, so an engine that lost its lease, even to itself after a long stall, can neither
renew, complete nor fail the job. Claims are Lua scripts too, so two engines never take one entry and
the fairness order is computed on one consistent view.

Attempts: the entry carries the attempts spent before it was published (``attempts``) and the
delivery count adds the rest. A retryable failure leaves the entry pending and backdates its idle time,
so that the takeover, which counts the next attempt, happens after the back-off; past ``max_attempts``
the takeover ends the job as failed with the last error kept. ``release`` (a clean shutdown) re-adds
the job without counting the attempt.

Results: ``complete`` publishes the PNG bytes on ``results`` in the same script that acks the entry,
so a result exists exactly when the job left the queue. ``pump`` (bot side) writes the images and
applies the outcome with bot.db.records, idempotently: an event applied twice, or a second result of a
job that ran twice, changes nothing. Applied events are deleted, so image bytes do not stay in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.background import wait_for_event
from engine.queue.protocol import ClaimedJob, GeneratedImage, JobParams, JobResult, LeaseState

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

    from bot.config import Settings
    from bot.db.session import Database

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "atelier:"
ENGINES = "engines"
BOTS = "bots"

# A cancel flag outlives any plausible wait in the queue; an error is only needed until the next attempt.
CANCEL_TTL_SECONDS = 7 * 24 * 3600
ERROR_TTL_SECONDS = 24 * 3600
# Records of engines that stopped heartbeating stay listed (as not alive) this long, then go.
DEAD_WORKER_SECONDS = 24 * 3600
# Retry back-off, as in the SQLite backend: 2 s, 4 s, 8 s … (never longer than the lease).
BACKOFF_SECONDS = 2.0
# An image-to-image job's init image travels with it, as PNG bytes in this field of its stream entry.
INIT_IMAGE_FIELD = "init_image_png"
UNAVAILABLE_LOG_SECONDS = 30.0

_PRELUDE = """
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
"""

# ARGV: prefix, model, member, created ms, job id, entry fields…
_PUBLISH = (
    _PRELUDE
    + """
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
"""
)

# ARGV: prefix, consumer, lease ms, limit, models… (none: every model)
# Returns {{model, member, entry id, deliveries, {fields…}}, …}
_CLAIM = (
    _PRELUDE
    + """
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
"""
)

# ARGV: prefix, consumer, model, member, entry id, deliveries, job id → 0 lost, 1 held, 2 cancel requested
_RENEW = (
    _PRELUDE
    + """
local key = qkey(ARGV[3], ARGV[4])
if not owned(key, ARGV[5], ARGV[2], ARGV[6]) then return 0 end
-- The owner's XCLAIM with JUSTID resets the idle time and leaves the delivery count, the fencing
-- token, as it is.
redis.call('XCLAIM', key, GROUP, ARGV[2], 0, ARGV[5], 'JUSTID')
if redis.call('EXISTS', P .. 'cancel:' .. ARGV[7]) == 1 then return 2 end
return 1
"""
)

# ARGV: prefix, consumer, model, member, entry id, deliveries, job id, result fields… → 1 done, 0 lost
_COMPLETE = (
    _PRELUDE
    + """
local model, member, id = ARGV[3], ARGV[4], ARGV[5]
if not owned(qkey(model, member), id, ARGV[2], ARGV[6]) then return 0 end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
emit(fields)
remove(model, member, id)
redis.call('DEL', P .. 'error:' .. ARGV[7])
return 1
"""
)

# ARGV: prefix, consumer, model, member, entry id, deliveries, job id, retryable (0/1), attempt,
#       max attempts, back-off idle ms, error, error TTL s → 'lost', 'cancelled', 'queued' or 'failed'
_FAIL = (
    _PRELUDE
    + """
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
"""
)

# ARGV: prefix, consumer, model, member, entry id, deliveries, created ms, entry fields… → 1 / 0
_RELEASE = (
    _PRELUDE
    + """
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
"""
)


async def _entry(
    job_id: str, user_id: int, params: JobParams, attempts: int, max_attempts: int, created: str
) -> list[str | bytes]:
    """A job's stream entry, flattened to field, value, field, value… for the scripts."""
    fields: dict[str, str | bytes] = {
        "job_id": job_id,
        "user_id": str(user_id),
        "model": params.model,
        "params": json.dumps(params.to_dict()),
        "attempts": str(attempts),
        "max_attempts": str(max_attempts),
        "created": created,
    }
    if params.init_image:
        # The file is on this host; engines on other hosts get its bytes with the job.
        fields[INIT_IMAGE_FIELD] = await asyncio.to_thread(Path(params.init_image).read_bytes)
    return [item for pair in fields.items() for item in pair]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _epoch_ms(moment: datetime) -> int:
    """Naive datetimes in this project are UTC (bot.db.base.utcnow)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _utc(epoch_seconds: float) -> datetime:
    # Naive UTC, like the SQLite backend's timestamps, so `atelier status` prints both alike.
    return datetime.fromtimestamp(epoch_seconds, UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class _Lease:
    """What a claimed job's lease token stands for; the token is this, serialised."""

    consumer: str
    model: str
    member: str
    entry_id: str
    deliveries: int
    created_ms: int  # the job's creation time, which a released job keeps in the fairness order

    def token(self) -> str:
        return json.dumps([self.consumer, self.model, self.member, self.entry_id, self.deliveries, self.created_ms])

    @classmethod
    def of(cls, job: ClaimedJob) -> _Lease:
        consumer, model, member, entry_id, deliveries, created_ms = json.loads(job.lease_token)
        return cls(consumer, model, member, entry_id, int(deliveries), int(created_ms))

    def args(self, prefix: str) -> list[Any]:
        return [prefix, self.consumer, self.model, self.member, self.entry_id, self.deliveries]


class RedisQueue:
    """The JobQueue over Redis Streams. The bot side needs ``database`` (publish, cancel, pump); the
    engine side does not and never opens one."""

    def __init__(
        self,
        url: str,
        *,
        settings: Settings,
        database: Database | None = None,
        prefix: str = DEFAULT_PREFIX,
        results_reclaim_seconds: float = 30.0,
    ) -> None:
        self.redis: aioredis.Redis = aioredis.from_url(url, protocol=2, health_check_interval=30)
        self.settings = settings
        self.db = database
        self.prefix = prefix
        self.lease_ms = max(1, int(settings.lease_seconds * 1000))
        # A bot process that died with results claimed but not applied: another one applies them
        # after this long. Also how soon a result that failed to apply (a locked database) is retried.
        self.results_reclaim_ms = int(results_reclaim_seconds * 1000)
        self._publish = self.redis.register_script(_PUBLISH)
        self._claim = self.redis.register_script(_CLAIM)
        self._renew = self.redis.register_script(_RENEW)
        self._complete = self.redis.register_script(_COMPLETE)
        self._fail = self.redis.register_script(_FAIL)
        self._release = self.redis.register_script(_RELEASE)
        self._worker_started: dict[str, float] = {}
        self._unavailable_logged = 0.0
        self._wake: PubSub | None = None  # an engine's subscription to "a job was published"

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # ---------------------------------------------------------------- bot side

    async def publish(self, job_id: str) -> None:
        """Send a committed job row to the engines."""
        from bot.db.models import Job, JobStatus
        from engine.queue.sqlite import claimed_params

        async with self._database().sessions() as session:
            job = await session.get(Job, job_id)
        if job is None:
            raise LookupError(f"no job {job_id} to publish")
        if job.status != JobStatus.QUEUED:
            log.info("job %s is %s, not queued: not published", job_id, job.status)
            return
        created = str(_epoch_ms(job.created_at))
        flat = await _entry(job.id, job.user_id, claimed_params(job), job.attempts, job.max_attempts, created)
        await self._publish(args=[self.prefix, job.model, str(job.user_id), created, job.id, *flat], client=self.redis)
        await self.redis.publish(self._key("wake"), job.model)  # idle engines claim now, not at their next poll

    async def cancel(self, job_id: str) -> str | None:
        """A queued job ends at once with a refund; a running one is flagged and its engine stops it."""
        from engine.queue.sqlite import cancel_in_database

        # The flag first: an engine that claims the job a moment later must already see it.
        await self.redis.set(self._key("cancel", job_id), 1, ex=CANCEL_TTL_SECONDS)
        return await cancel_in_database(self._database(), job_id)

    async def pump(self, stop: asyncio.Event | None = None, *, block_ms: int = 1000) -> None:
        """Apply engines' events to the database until ``stop`` is set (or the task is cancelled).

        Any number of bot processes may pump: each event goes to one of them (consumer group), an event
        claimed by a bot that died is applied by another after ``results_reclaim_seconds``, and applying
        is idempotent, so a redelivered event changes nothing.
        """
        results = self._key("results")
        consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        group_ready = False
        last_reclaim = 0.0
        while stop is None or not stop.is_set():
            try:
                if not group_ready:
                    await self._ensure_group(results, BOTS)
                    group_ready = True
                entries: list[tuple[Any, dict[bytes, bytes]]] = []
                if time.monotonic() - last_reclaim >= self.results_reclaim_ms / 2000:
                    last_reclaim = time.monotonic()
                    reclaimed = await self.redis.xautoclaim(
                        results, BOTS, consumer, self.results_reclaim_ms, "0-0", count=50
                    )
                    entries += [entry for entry in reclaimed[1] if entry and entry[1]]
                if not entries:
                    read = await self.redis.xreadgroup(BOTS, consumer, {results: ">"}, count=32, block=block_ms)
                    entries = [entry for _, batch in read for entry in batch]
                for entry_id, fields in entries:
                    await self._apply_entry(results, entry_id, fields)
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError) as error:
                self._log_unavailable("results pump", error)
                group_ready = False
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("results pump pass failed")
                await asyncio.sleep(1.0)

    async def _apply_entry(self, results: str, entry_id: Any, raw: dict[bytes, bytes]) -> None:
        fields = {_text(k): v for k, v in raw.items()}
        try:
            event, job_id = _text(fields["event"]), _text(fields["job_id"])
        except KeyError:
            log.error("dropping malformed result %s: fields %s", _text(entry_id), sorted(fields))
            await self._ack(results, entry_id)
            return
        try:
            await self._apply(event, job_id, fields)
        except Exception:
            # Left pending: this or another bot process applies it again after results_reclaim_seconds.
            log.exception("could not apply %s of job %s; will retry", event, job_id)
            return
        await self._ack(results, entry_id)

    async def _ack(self, results: str, entry_id: Any) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(results, BOTS, entry_id)
            pipe.xdel(results, entry_id)  # the image bytes need not stay in Redis once on disk
            await pipe.execute()

    async def _apply(self, event: str, job_id: str, fields: dict[str, Any]) -> None:
        from sqlalchemy import func, update

        from bot.db.base import utcnow
        from bot.db.models import Job, JobStatus
        from bot.db.records import record_failure, record_success, write_images

        database = self._database()
        open_job = (Job.id == job_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        attempt = int(_text(fields.get("attempt", b"0")) or 0)
        if event == "started":
            async with database.transaction() as session:
                await session.execute(
                    update(Job)
                    .where(*open_job)
                    .values(
                        status=JobStatus.RUNNING,
                        # max: with several bots, an older attempt's event may be applied after a newer one.
                        attempts=func.max(Job.attempts, attempt),
                        started_at=func.coalesce(Job.started_at, utcnow()),
                        progress_step=None,
                    )
                )
        elif event == "progress":
            async with database.transaction() as session:
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                    .values(progress_step=int(_text(fields["step"])))
                )
        elif event == "succeeded":
            # A job that ran twice (a lease lost mid-run) may report twice: the files of the result already
            # recorded, and perhaps delivered, are not to be overwritten.
            async with database.sessions() as session:
                job = await session.get(Job, job_id)
            if job is None or job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                log.info("job %s is %s; its result is dropped", job_id, job.status if job else "gone")
                return
            meta = json.loads(_text(fields["meta"]))
            images = [
                GeneratedImage(m["index"], fields[f"png:{m['index']}"], m["width"], m["height"], m.get("nsfw_score"))
                for m in meta["images"]
            ]
            result = JobResult(images, meta["gpu_seconds"], meta["compute_units"], meta.get("extra", {}))
            paths = await asyncio.to_thread(write_images, self.settings.images_dir, job_id, images)
            async with database.transaction() as session:
                await record_success(session, job_id, result, paths, lease_owner=None)
        elif event in ("failed", "cancelled"):
            async with database.transaction() as session:
                values: dict[str, Any] = {}
                if attempt:
                    values["attempts"] = func.max(Job.attempts, attempt)
                if event == "cancelled":
                    values["cancel_requested"] = True  # so that record_failure ends it as cancelled
                if values:
                    await session.execute(update(Job).where(*open_job).values(**values))
                error = _text(fields.get("error", b"")) or event
                await record_failure(session, job_id, error, lease_owner=None, retryable=False)
        else:
            log.warning("unknown result event %r for job %s ignored", event, job_id)

    def _database(self) -> Database:
        if self.db is None:
            raise RuntimeError("this needs the bot's database; engines use the queue without one")
        return self.db

    # ---------------------------------------------------------------- engine side

    async def claim(self, worker_id: str, limit: int = 1, models: list[str] | None = None) -> list[ClaimedJob]:
        try:
            rows = await self._claim(
                args=[self.prefix, worker_id, self.lease_ms, max(1, limit), *(models or [])], client=self.redis
            )
        except (RedisConnectionError, RedisTimeoutError) as error:
            # Redis restarting is an outage to wait out, not a reason for the engine to exit.
            self._log_unavailable("claim", error)
            return []
        claimed = []
        for model, member, entry_id, deliveries, flat in rows:
            raw = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
            init_image = raw.pop(INIT_IMAGE_FIELD, None)
            fields = {name: _text(value) for name, value in raw.items()}
            lease = _Lease(
                worker_id, _text(model), _text(member), _text(entry_id), int(_text(deliveries)), int(fields["created"])
            )
            claimed.append(
                ClaimedJob(
                    id=fields["job_id"],
                    user_id=int(fields["user_id"]),
                    attempt=int(fields["attempts"]) + lease.deliveries,
                    max_attempts=int(fields["max_attempts"]),
                    params=await self._with_local_init_image(
                        fields["job_id"], JobParams.from_dict(json.loads(fields["params"])), init_image
                    ),
                    lease_token=lease.token(),
                )
            )
        return claimed

    async def _with_local_init_image(self, job_id: str, params: JobParams, png: bytes | None) -> JobParams:
        """Point an image-to-image job at a copy of its init image on this host."""
        if png is None:
            return params
        from bot.db.records import write_atomically

        path = self.settings.data_dir / "inputs" / f"{job_id}.png"
        await asyncio.to_thread(write_atomically, path, png)
        return replace(params, init_image=str(path))

    def _drop_local_init_image(self, job: ClaimedJob) -> None:
        if job.params.init_image and Path(job.params.init_image).parent == self.settings.data_dir / "inputs":
            Path(job.params.init_image).unlink(missing_ok=True)

    async def wait_for_work(self, timeout: float, stop: asyncio.Event) -> None:
        """Return when a job has been published since the last return, when ``stop`` is set, or after
        ``timeout`` (retry back-offs and a dead engine's jobs come due without a message). The first call
        only subscribes, so that nothing published during the claim that follows is missed."""
        try:
            if self._wake is None:
                self._wake = self.redis.pubsub(ignore_subscribe_messages=True)
                await self._wake.subscribe(self._key("wake"))
                return
            deadline = time.monotonic() + timeout
            while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
                if await self._wake.get_message(timeout=min(0.05, remaining)) is not None:
                    while await self._wake.get_message(timeout=0) is not None:
                        pass  # one claim answers every message that queued up meanwhile
                    return
        except (RedisConnectionError, RedisTimeoutError) as error:
            self._log_unavailable("wake-up subscription", error)
            await self._close_wake()
            await wait_for_event(stop, timeout)

    async def _close_wake(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                await wake.aclose()

    async def renew(self, job: ClaimedJob) -> LeaseState:
        state = await self._renew(args=[*_Lease.of(job).args(self.prefix), job.id], client=self.redis)
        return {0: LeaseState.LOST, 1: LeaseState.HELD, 2: LeaseState.CANCELLED}[int(state)]

    async def progress(self, job: ClaimedJob, step: int, total: int | None = None) -> None:
        fields: dict[str, Any] = {"event": "progress", "job_id": job.id, "step": step}
        if total is not None:
            fields["total"] = total
        await self.redis.xadd(self._key("results"), fields)

    async def complete(self, job: ClaimedJob, result: JobResult) -> bool:
        meta = {
            "gpu_seconds": result.gpu_seconds,
            "compute_units": result.compute_units,
            "extra": result.extra,
            "images": [
                {"index": i.index, "width": i.width, "height": i.height, "nsfw_score": i.nsfw_score}
                for i in result.images
            ],
        }
        fields: list[Any] = ["event", "succeeded", "job_id", job.id, "attempt", job.attempt, "meta", json.dumps(meta)]
        for image in result.images:
            fields += [f"png:{image.index}", image.png]
        done = await self._complete(args=[*_Lease.of(job).args(self.prefix), job.id, *fields], client=self.redis)
        self._drop_local_init_image(job)
        if not done:
            log.warning("job %s finished after its lease was lost; result discarded", job.id)
        return bool(done)

    async def complete_many(self, results: list[tuple[ClaimedJob, JobResult]]) -> list[bool]:
        # Each completion is one atomic script call already; there is no transaction to share.
        return [await self.complete(job, result) for job, result in results]

    async def fail(self, job: ClaimedJob, error: str, *, retryable: bool = True) -> str:
        backoff_ms = int(min(BACKOFF_SECONDS * 2 ** (job.attempt - 1), self.settings.lease_seconds) * 1000)
        status = await self._fail(
            args=[
                *_Lease.of(job).args(self.prefix),
                job.id,
                "1" if retryable else "0",
                job.attempt,
                job.max_attempts,
                max(0, self.lease_ms - backoff_ms),
                error[:4000],
                ERROR_TTL_SECONDS,
            ],
            client=self.redis,
        )
        self._drop_local_init_image(job)  # a retry gets the bytes again from the stream entry
        return _text(status)

    async def release(self, job: ClaimedJob) -> None:
        lease = _Lease.of(job)
        created = str(lease.created_ms)
        flat = await _entry(job.id, job.user_id, job.params, job.attempt - 1, job.max_attempts, created)
        await self._release(args=[*lease.args(self.prefix), created, *flat], client=self.redis)
        self._drop_local_init_image(job)

    async def heartbeat(self, worker_id: str, model: str) -> None:
        now = time.time()
        record = {
            "id": worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "model": model,
            "started_at": self._worker_started.setdefault(worker_id, now),
            "heartbeat_at": now,
        }
        alive_ms = int(self._alive_seconds() * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key("workers"), worker_id, json.dumps(record))
            pipe.set(self._key("worker", worker_id), 1, px=alive_ms)
            await pipe.execute()

    async def worker_stopped(self, worker_id: str) -> None:
        self._worker_started.pop(worker_id, None)
        await self._close_wake()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._key("workers"), worker_id)
            pipe.delete(self._key("worker", worker_id))
            await pipe.execute()

    def _alive_seconds(self) -> float:
        # The same rule as the SQLite backend's status: three missed heartbeats and at least 10 s.
        return max(10.0, 3 * self.settings.heartbeat_seconds)

    # ---------------------------------------------------------------- operators

    async def status(self) -> dict[str, Any]:
        """Queue depth, running jobs and engines, read from Redis alone (engines' view)."""
        now = time.time()
        depth = 0
        oldest_ms: float | None = None
        running_jobs: list[dict[str, Any]] = []
        jobs_by_model: dict[str, int] = {}
        for model in sorted(_text(m) for m in await self.redis.smembers(self._key("models"))):
            heads = await self.redis.zrange(self._key("waiting", model), 0, 0, withscores=True)
            if heads:
                oldest_ms = heads[0][1] if oldest_ms is None else min(oldest_ms, heads[0][1])
            for member in sorted(_text(m) for m in await self.redis.smembers(self._key("members", model))):
                key = self._key("q", model, member)
                try:
                    length = await self.redis.xlen(key)
                    pending = await self.redis.xpending_range(key, ENGINES, "-", "+", max(1, length))
                except ResponseError:
                    continue  # emptied and deleted since the set was read
                depth += length - len(pending)
                jobs_by_model[model] = jobs_by_model.get(model, 0) + length
                for entry in pending:
                    found = await self.redis.xrange(key, entry["message_id"], entry["message_id"])
                    info = {_text(k): _text(v) for k, v in found[0][1].items()} if found else {}
                    running_jobs.append(
                        {
                            "job_id": info.get("job_id"),
                            "worker": _text(entry["consumer"]),
                            "user_id": int(member),
                            "model": model,
                            "attempt": int(info.get("attempts", 0)) + int(entry["times_delivered"]),
                            "idle_seconds": entry["time_since_delivered"] / 1000,
                        }
                    )
        return {
            "queue_depth": depth,
            "running": len(running_jobs),
            "jobs_by_model": jobs_by_model,
            "oldest_queued_seconds": None if oldest_ms is None else max(0.0, now - oldest_ms / 1000),
            "running_jobs": running_jobs,
            "results_backlog": await self._results_backlog(),
            "workers": await self.workers(),
        }

    async def _results_backlog(self) -> int:
        """Events engines have sent that no bot has applied yet (a stopped bot shows here)."""
        try:
            return int(await self.redis.xlen(self._key("results")))
        except ResponseError:
            return 0

    async def workers(self) -> list[dict[str, Any]]:
        """Engines that heartbeat, or did within the last day, with ``alive`` telling which."""
        now = time.time()
        records = {_text(k): json.loads(v) for k, v in (await self.redis.hgetall(self._key("workers"))).items()}
        ids = sorted(records)
        alive = [bool(x) for x in await self.redis.mget([self._key("worker", i) for i in ids])] if ids else []
        workers = []
        for worker_id, is_alive in zip(ids, alive, strict=True):
            record = records[worker_id]
            if not is_alive and now - record["heartbeat_at"] > DEAD_WORKER_SECONDS:
                await self.redis.hdel(self._key("workers"), worker_id)
                continue
            workers.append(
                record
                | {
                    "started_at": _utc(record["started_at"]),
                    "heartbeat_at": _utc(record["heartbeat_at"]),
                    "alive": is_alive,
                }
            )
        return workers

    async def live_workers(self, model: str) -> int:
        return sum(1 for w in await self.workers() if w["alive"] and w["model"] == model)

    async def close(self) -> None:
        await self._close_wake()
        await self.redis.aclose()

    # ---------------------------------------------------------------- helpers

    async def _ensure_group(self, key: str, group: str) -> None:
        try:
            await self.redis.xgroup_create(key, group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _log_unavailable(self, what: str, error: Exception) -> None:
        # Once per interval: a Redis restart must not flood the log from every poll.
        now = time.monotonic()
        if now - self._unavailable_logged >= UNAVAILABLE_LOG_SECONDS:
            self._unavailable_logged = now
            log.warning("redis unavailable during %s: %s", what, error)
