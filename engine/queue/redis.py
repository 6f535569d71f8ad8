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
applies the outcome with engine.queue.ledger, idempotently: an event applied twice, or a second result of a
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import select

from engine.background import wait_for_event
from engine.contract import ClaimedJob, GeneratedImage, JobResult, JobSpec, JobStatus, LeaseState, QueuedJob, utcnow
from engine.queue import ledger

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio.client import PubSub

    from engine.config import EngineSettings
    from engine.queue.database import Database

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "atelier:"
ENGINES = "engines"
BOTS = "bots"

# A cancel flag outlives any plausible wait in the queue; an error is only needed until the next attempt.
CANCEL_TTL_SECONDS = 7 * 24 * 3600
ERROR_TTL_SECONDS = 24 * 3600
# Records of engines that stopped heartbeating stay listed (as not alive) this long, then go.
DEAD_WORKER_SECONDS = 24 * 3600
# An image-to-image job's init image travels with it, as PNG bytes in this field of its stream entry.
INIT_IMAGE_FIELD = "init_image_png"
UNAVAILABLE_LOG_SECONDS = 30.0
# How often a bot's pump compares its ledger with Redis (see republish_lost): a backstop, not a poll.
RECONCILE_SECONDS = 60.0
LUA_DIR = Path(__file__).with_name("lua")


def _script(name: str) -> str:
    """A script of lua/, behind the prelude of helpers they share (Redis scripts cannot import)."""
    return (LUA_DIR / "prelude.lua").read_text() + (LUA_DIR / f"{name}.lua").read_text()


async def _entry(
    job_id: str, user_id: int, spec: JobSpec, attempts: int, max_attempts: int, created: str
) -> list[str | bytes]:
    """A job's stream entry, flattened to field, value, field, value… for the scripts."""
    fields: dict[str, str | bytes] = {
        "job_id": job_id,
        "user_id": str(user_id),
        "model": spec.model,
        "spec": json.dumps(spec.to_dict()),
        "attempts": str(attempts),
        "max_attempts": str(max_attempts),
        "created": created,
    }
    if spec.init_image:
        # The file is on this host; engines on other hosts get its bytes with the job.
        fields[INIT_IMAGE_FIELD] = await asyncio.to_thread(Path(spec.init_image).read_bytes)
    return [item for pair in fields.items() for item in pair]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _epoch_ms(moment: datetime) -> int:
    """Naive datetimes in this project are UTC (engine.contract.utcnow)."""
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
        settings: EngineSettings,
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
        self._publish = self.redis.register_script(_script("publish"))
        self._claim = self.redis.register_script(_script("claim"))
        self._renew = self.redis.register_script(_script("renew"))
        self._complete = self.redis.register_script(_script("complete"))
        self._fail = self.redis.register_script(_script("fail"))
        self._release = self.redis.register_script(_script("release"))
        self._worker_started: dict[str, float] = {}
        self._unavailable_logged = 0.0
        self._wake: PubSub | None = None  # an engine's subscription to "a job was published"

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # ---------------------------------------------------------------- bot side

    async def publish(self, job: QueuedJob) -> None:
        """Send a committed job to the engines."""
        created = str(_epoch_ms(job.created_at))
        flat = await _entry(job.id, job.user_id, job.spec, job.attempts, job.max_attempts, created)
        await self._publish(
            args=[self.prefix, job.spec.model, str(job.user_id), created, job.id, *flat], client=self.redis
        )
        await self.redis.publish(self._key("wake"), job.spec.model)  # idle engines claim now, not at their next poll

    async def publish_many(self, jobs: list[QueuedJob]) -> None:
        """``publish`` for many jobs in one round trip (a backlog published again, a benchmark's fill)."""
        if not jobs:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                created = str(_epoch_ms(job.created_at))
                flat = await _entry(job.id, job.user_id, job.spec, job.attempts, job.max_attempts, created)
                await self._publish(
                    args=[self.prefix, job.spec.model, str(job.user_id), created, job.id, *flat], client=pipe
                )
            for model in sorted({job.spec.model for job in jobs}):
                pipe.publish(self._key("wake"), model)
            await pipe.execute()

    async def cancel(self, job_id: str) -> str | None:
        """A queued job ends at once with a refund; a running one is flagged and its engine stops it."""
        # The flag first: an engine that claims the job a moment later must already see it.
        await self.redis.set(self._key("cancel", job_id), 1, ex=CANCEL_TTL_SECONDS)
        async with self._database().transaction() as session:
            return await ledger.cancel(session, job_id)

    async def pump(
        self,
        stop: asyncio.Event | None = None,
        *,
        block_ms: int = 1000,
        on_applied: Callable[[], object] | None = None,
    ) -> None:
        """Apply engines' events to the database until ``stop`` is set (or the task is cancelled).
        ``on_applied`` is called after each batch of applied events: this process's delivery need not
        wait to see the commit.

        Any number of bot processes may pump: each event goes to one of them (consumer group), an event
        claimed by a bot that died is applied by another after ``results_reclaim_seconds``, and applying
        is idempotent, so a redelivered event changes nothing.
        """
        results = self._key("results")
        consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        group_ready = False
        last_reclaim = 0.0
        last_reconcile = time.monotonic()
        while stop is None or not stop.is_set():
            try:
                if not group_ready:
                    await self._ensure_group(results, BOTS)
                    group_ready = True
                entries: list[tuple[Any, dict[bytes, bytes]]] = []
                if time.monotonic() - last_reconcile >= RECONCILE_SECONDS:
                    last_reconcile = time.monotonic()
                    await self.republish_lost()
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
                if entries and on_applied is not None:
                    on_applied()
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError) as error:
                self._log_unavailable("results pump", error)
                group_ready = False
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("results pump pass failed")
                await asyncio.sleep(1.0)

    async def republish_lost(self, *, grace_seconds: float = 60.0) -> list[str]:
        """Publish again the open jobs of the ledger that Redis no longer holds, as after a restart of a
        Redis without persistence; they would otherwise stay "queued" or "running" for ever. Jobs newer
        than ``grace_seconds`` are left alone: their publish may still be on its way."""
        held: set[str] = set()
        for model in [_text(m) for m in await self.redis.smembers(self._key("models"))]:
            for member in [_text(m) for m in await self.redis.smembers(self._key("members", model))]:
                for _, fields in await self.redis.xrange(self._key("q", model, member)):
                    held.add(_text(fields[b"job_id"]))
        cutoff = utcnow() - timedelta(seconds=grace_seconds)
        open_statuses = [JobStatus.QUEUED, JobStatus.RUNNING]
        query = select(*ledger.QUEUED_COLUMNS, ledger.jobs.c.status).where(
            ledger.jobs.c.status.in_(open_statuses), ledger.jobs.c.created_at <= cutoff
        )
        async with self._database().sessions() as session:
            rows = (await session.execute(query)).all()
        lost = [row for row in rows if row.id not in held]
        for row in lost:
            log.warning("job %s is %s in the ledger but not in Redis; publishing it again", row.id, row.status)
            await self.publish(ledger.queued_of(row))
        return [row.id for row in lost]

    async def pump_pending(self) -> int:
        """Apply every event already reported, then return how many there were: a pump that ends
        instead of waiting for more, for a command (or a test) that needs the ledger up to date now."""
        results = self._key("results")
        await self._ensure_group(results, BOTS)
        consumer = f"{socket.gethostname()}-{os.getpid()}-once"
        applied = 0
        while read := await self.redis.xreadgroup(BOTS, consumer, {results: ">"}, count=64):
            entries = [entry for _, batch in read for entry in batch]
            if not entries:
                break
            for entry_id, fields in entries:
                await self._apply_entry(results, entry_id, fields)
            applied += len(entries)
        return applied

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
        database = self._database()
        attempt = int(_text(fields.get("attempt", b"0")) or 0)
        if event == "started":
            async with database.transaction() as session:
                await ledger.mark_started(session, job_id, attempt)
        elif event == "progress":
            if "preview" in fields:
                path = ledger.preview_path(self.settings.images_dir, job_id)
                await asyncio.to_thread(ledger.write_atomically, path, fields["preview"])
            async with database.transaction() as session:
                await ledger.record_progress(session, job_id, int(_text(fields["step"])))
        elif event == "succeeded":
            # A job that ran twice (a lease lost mid-run) may report twice: the files of the result already
            # recorded, and perhaps delivered, are not to be overwritten.
            async with database.sessions() as session:
                still_open = (
                    await session.execute(select(ledger.jobs.c.id).where(ledger.open_job(job_id, None)))
                ).scalar_one_or_none()
            if still_open is None:
                log.info("job %s has ended or is gone; its result is dropped", job_id)
                return
            meta = json.loads(_text(fields["meta"]))
            images = [GeneratedImage.from_meta(m, fields[f"png:{m['index']}"]) for m in meta["images"]]
            result = JobResult(images, meta["gpu_seconds"], meta.get("extra", {}))
            paths = await asyncio.to_thread(ledger.write_images, self.settings.images_dir, job_id, images)
            async with database.transaction() as session:
                await ledger.record_successes(session, [ledger.Success(job_id, result, paths, None, attempt)])
        elif event in ("failed", "cancelled"):
            error = _text(fields.get("error", b"")) or event
            async with database.transaction() as session:
                await ledger.record_failure(
                    session,
                    job_id,
                    error,
                    lease_owner=None,
                    retryable=False,
                    attempt=attempt,
                    cancelled=event == "cancelled",
                )
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
                    spec=await self._with_local_init_image(
                        fields["job_id"], JobSpec.from_dict(json.loads(fields["spec"])), init_image
                    ),
                    lease_token=lease.token(),
                )
            )
        return claimed

    async def _with_local_init_image(self, job_id: str, params: JobSpec, png: bytes | None) -> JobSpec:
        """Point an image-to-image job at a copy of its init image on this host."""
        if png is None:
            return params
        path = self.settings.data_dir / "inputs" / f"{job_id}.png"
        await asyncio.to_thread(ledger.write_atomically, path, png)
        return replace(params, init_image=str(path))

    def _drop_local_init_image(self, job: ClaimedJob) -> None:
        if job.spec.init_image and Path(job.spec.init_image).parent == self.settings.data_dir / "inputs":
            Path(job.spec.init_image).unlink(missing_ok=True)

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

    async def progress(
        self, job: ClaimedJob, step: int, total: int | None = None, *, preview: bytes | None = None
    ) -> None:
        fields: dict[str, Any] = {"event": "progress", "job_id": job.id, "step": step}
        if total is not None:
            fields["total"] = total
        if preview is not None:
            fields["preview"] = preview  # a small JPEG; the bot writes it where its progress pass reads it
        await self.redis.xadd(self._key("results"), fields)

    async def complete(self, job: ClaimedJob, result: JobResult) -> bool:
        meta = {
            "gpu_seconds": result.gpu_seconds,
            "extra": result.extra,
            "images": [image.meta() for image in result.images],
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
        backoff_ms = int(min(ledger.retry_backoff_seconds(job.attempt), self.settings.lease_seconds) * 1000)
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
        flat = await _entry(job.id, job.user_id, job.spec, job.attempt - 1, job.max_attempts, created)
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
