"""The many-host queue: Redis Streams consumer groups, behind the same interface as the SQLite queue.

Layout (all keys under ``atelier:``):

- ``q:{user}``: one stream per member, consumer group ``engines``. One stream per member is what makes
  the claim fair: an engine serves the member with the fewest running jobs first, then the one whose
  oldest waiting job is oldest, exactly the SQLite backend's order.
- ``members``: sorted set of members with a stream, scored by when they last had nothing waiting.
- ``running``: hash member → jobs running now.
- ``cancel:{job}``: set by the bot; an engine sees it when it claims or renews.
- ``results``: stream of outcomes (with the PNG bytes), consumer group ``bots``: engines need no
  shared disk or database, and the bot applies each result to SQLite once.
- ``worker:{id}``: heartbeat with a TTL; ``workers`` is the set of ids ever seen.

Leases are the streams' own pending entries: an engine renews by re-claiming its entry (which resets its
idle time); an entry idle longer than the lease is taken over with XAUTOCLAIM by any engine. Every
renewal and completion is a Lua script that first checks the entry still belongs to the caller, so an
engine that lost its lease cannot ack or report a job another engine now owns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from engine.queue.protocol import ClaimedJob, GeneratedImage, JobParams, JobResult, LeaseState

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.db.session import Database

log = logging.getLogger(__name__)

PREFIX = "atelier:"
ENGINES = "engines"
BOTS = "bots"

# Owner check and renewal in one step: XCLAIM with min-idle 0 by the owner only resets the idle time.
_RENEW = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
return 1
"""

# Settle an entry we still own: ack it, adjust the running count, then publish a result and/or
# re-enqueue. ARGV: group, consumer, entry id, member, result fields (json), requeue fields (json).
_SETTLE = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if tonumber(redis.call('HINCRBY', KEYS[3], ARGV[4], -1)) <= 0 then redis.call('HDEL', KEYS[3], ARGV[4]) end
if ARGV[5] ~= '' then
  local fields = cjson.decode(ARGV[5])
  local flat = {}
  for k, v in pairs(fields) do table.insert(flat, k); table.insert(flat, v) end
  redis.call('XADD', KEYS[2], '*', unpack(flat))
end
if ARGV[6] ~= '' then
  local fields = cjson.decode(ARGV[6])
  local flat = {}
  for k, v in pairs(fields) do table.insert(flat, k); table.insert(flat, v) end
  redis.call('XADD', KEYS[1], '*', unpack(flat))
end
return 1
"""


# A member with nothing waiting or running leaves the list. Atomic with publish (a MULTI of XADD and
# ZADD), so a job published meanwhile can never be stranded in an unlisted stream.
_PRUNE = """
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) return 1 end
return 0
"""


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisQueue:
    def __init__(self, url: str, *, settings: Settings, database: Database | None = None) -> None:
        self.redis = aioredis.from_url(url)
        self.settings = settings
        self.db = database
        self.lease_ms = int(settings.lease_seconds * 1000)
        self._renew = self.redis.register_script(_RENEW)
        self._settle = self.redis.register_script(_SETTLE)
        self._prune = self.redis.register_script(_PRUNE)
        # job id → (stream key, entry id, member): what a claimed job's lease is made of.
        self._entries: dict[str, tuple[str, str, str]] = {}
        self._consumer = f"bot-{socket.gethostname()}-{os.getpid()}"

    def _stream(self, user_id: int | str) -> str:
        return f"{PREFIX}q:{user_id}"

    # ---------------------------------------------------------------- bot side

    async def publish(self, job_id: str) -> None:
        """Send a committed job row to the engines."""
        from bot.db.models import Job

        assert self.db is not None, "publishing needs the bot's database"
        async with self.db.sessions() as session:
            job = await session.get(Job, job_id)
        if job is None:
            raise LookupError(job_id)
        from engine.queue.sqlite import claimed_params

        await self._enqueue(
            job_id, job.user_id, claimed_params(job), attempts=job.attempts, max_attempts=job.max_attempts
        )

    async def _enqueue(self, job_id: str, user_id: int, params: JobParams, *, attempts: int, max_attempts: int) -> None:
        stream = self._stream(user_id)
        # The group exists before the member is listed, so no engine ever reads a stream without it.
        try:
            await self.redis.xgroup_create(stream, ENGINES, id="0", mkstream=True)
        except aioredis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                stream,
                {
                    "job_id": job_id,
                    "user_id": str(user_id),
                    "params": json.dumps(params.to_dict()),
                    "attempts": str(attempts),
                    "max_attempts": str(max_attempts),
                },
            )
            pipe.zadd(f"{PREFIX}members", {str(user_id): time.time()}, nx=True)
            await pipe.execute()

    async def cancel(self, job_id: str) -> str | None:
        """Cancel in the database (queued: at once, with a refund); engines see the flag."""
        from engine.queue.sqlite import cancel_in_database

        await self.redis.set(f"{PREFIX}cancel:{job_id}", 1, ex=24 * 3600)
        assert self.db is not None
        return await cancel_in_database(self.db, job_id)

    async def pump(self, stop: asyncio.Event | None = None, *, block_ms: int = 200) -> None:
        """Apply engines' results to the database, once each, in the bot (any number of bot processes)."""
        results = f"{PREFIX}results"
        try:
            await self.redis.xgroup_create(results, BOTS, id="0", mkstream=True)
        except aioredis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        while stop is None or not stop.is_set():
            # A bot that died mid-apply leaves entries pending; take them over after a minute.
            _, stale, _ = await self.redis.xautoclaim(results, BOTS, self._consumer, 60_000, "0-0", count=10)
            fresh = await self.redis.xreadgroup(BOTS, self._consumer, {results: ">"}, count=10, block=block_ms)
            entries = list(stale) + [e for _, batch in fresh for e in batch]
            for entry_id, fields in entries:
                await self._apply(fields)
                await self.redis.xack(results, BOTS, entry_id)

    async def _apply(self, raw: dict[bytes, bytes]) -> None:
        from bot.db.records import record_failure, record_success, write_images

        fields = {_decode(k): v for k, v in raw.items()}
        job_id = _decode(fields["job_id"])
        status = _decode(fields["status"])
        assert self.db is not None
        if status == "succeeded":
            meta = json.loads(_decode(fields["meta"]))
            images = [
                GeneratedImage(i, fields[f"png{i}"], m["width"], m["height"], m.get("nsfw_score"))
                for i, m in enumerate(meta["images"])
            ]
            result = JobResult(images, meta["gpu_seconds"], meta["compute_units"])
            paths = await asyncio.to_thread(write_images, self.settings.images_dir, job_id, images)
            async with self.db.transaction() as session:
                await record_success(session, job_id, result, paths, lease_owner=None)
        else:
            async with self.db.transaction() as session:
                await record_failure(
                    session, job_id, _decode(fields.get("error", b"")), lease_owner=None, retryable=False
                )

    # ---------------------------------------------------------------- engine side

    async def claim(self, worker_id: str, limit: int = 1, models: list[str] | None = None) -> list[ClaimedJob]:
        claimed: list[ClaimedJob] = []
        while len(claimed) < limit:
            job = await self._claim_one(worker_id, models)
            if job is None:
                break
            claimed.append(job)
        return claimed

    async def _candidates(self) -> list[str]:
        members = await self.redis.zrange(f"{PREFIX}members", 0, -1, withscores=True)
        running = {_decode(k): int(v) for k, v in (await self.redis.hgetall(f"{PREFIX}running")).items()}
        # Fewest running first, then the member waiting longest: the SQLite backend's turn order.
        return [_decode(m) for m, score in sorted(members, key=lambda ms: (running.get(_decode(ms[0]), 0), ms[1]))]

    async def _claim_one(self, worker_id: str, models: list[str] | None) -> ClaimedJob | None:
        for member in await self._candidates():
            stream = self._stream(member)
            # A dead engine's jobs first: idle past the lease, any engine may take them over.
            _, entries, _ = await self.redis.xautoclaim(stream, ENGINES, worker_id, self.lease_ms, "0-0", count=1)
            taken_over = bool(entries)
            if not entries:
                fresh = await self.redis.xreadgroup(ENGINES, worker_id, {stream: ">"}, count=1)
                entries = fresh[0][1] if fresh else []
            if not entries:
                await self._prune(keys=[stream, f"{PREFIX}members"], args=[member])
                continue
            entry_id, fields = entries[0]
            entry_id = _decode(entry_id)
            await self.redis.hincrby(f"{PREFIX}running", member, 1)
            # To the back of the line among members with as many running jobs: round-robin.
            await self.redis.zadd(f"{PREFIX}members", {member: time.time()}, xx=True)
            job = await self._admit(worker_id, stream, member, entry_id, fields, models, taken_over)
            if job is not None:
                return job
        return None

    async def _admit(
        self,
        worker_id: str,
        stream: str,
        member: str,
        entry_id: str,
        raw: dict[bytes, bytes],
        models: list[str] | None,
        taken_over: bool,
    ) -> ClaimedJob | None:
        fields = {_decode(k): _decode(v) for k, v in raw.items()}
        job_id = fields["job_id"]
        params = JobParams.from_dict(json.loads(fields["params"]))
        pending = await self.redis.xpending_range(stream, ENGINES, entry_id, entry_id, 1)
        deliveries = int(pending[0]["times_delivered"]) if pending else 1
        attempt = int(fields["attempts"]) + deliveries
        max_attempts = int(fields["max_attempts"])
        self._entries[job_id] = (stream, entry_id, member)
        job = ClaimedJob(job_id, int(fields["user_id"]), attempt, max_attempts, params, f"{worker_id}:{entry_id}")
        if await self.redis.exists(f"{PREFIX}cancel:{job_id}"):
            await self._finish(job, {"job_id": job_id, "status": "cancelled", "error": "cancelled"}, None)
            return None
        if taken_over and attempt > max_attempts:
            error = "lease expired: the engine stopped responding"
            await self._finish(job, {"job_id": job_id, "status": "failed", "error": error}, None)
            return None
        if models and params.model not in models:
            # Not ours to run: hand it back for an engine that has this model loaded.
            await self._finish(job, None, self._requeue_fields(job, attempts=attempt - 1))
            return None
        return job

    def _requeue_fields(self, job: ClaimedJob, *, attempts: int) -> dict[str, str]:
        return {
            "job_id": job.id,
            "user_id": str(job.user_id),
            "params": json.dumps(job.params.to_dict()),
            "attempts": str(attempts),
            "max_attempts": str(job.max_attempts),
        }

    async def _finish(self, job: ClaimedJob, result: dict[str, Any] | None, requeue: dict[str, str] | None) -> bool:
        stream, entry_id, member = self._entries.pop(job.id)
        worker = job.lease_token.rsplit(":", 1)[0]
        done = await self._settle(
            keys=[stream, f"{PREFIX}results", f"{PREFIX}running"],
            args=[
                ENGINES,
                worker,
                entry_id,
                member,
                json.dumps(result) if result else "",
                json.dumps(requeue) if requeue else "",
            ],
        )
        return bool(done)

    async def renew(self, job: ClaimedJob) -> LeaseState:
        if job.id not in self._entries:
            return LeaseState.LOST
        stream, entry_id, _ = self._entries[job.id]
        worker = job.lease_token.rsplit(":", 1)[0]
        state = await self._renew(keys=[stream, f"{PREFIX}cancel:{job.id}"], args=[ENGINES, worker, entry_id])
        return {0: LeaseState.LOST, 1: LeaseState.HELD, 2: LeaseState.CANCELLED}[int(state)]

    async def progress(self, job: ClaimedJob, step: int) -> None:
        await self.redis.hset(f"{PREFIX}progress", job.id, step)

    async def complete(self, job: ClaimedJob, result: JobResult) -> bool:
        # Binary PNGs cannot pass through cjson: send them with a direct XADD after the owner check.
        state = await self.renew(job)
        if state is LeaseState.LOST:
            self._entries.pop(job.id, None)
            log.warning("job %s finished after its lease was lost; result discarded", job.id)
            return False
        meta = {
            "gpu_seconds": result.gpu_seconds,
            "compute_units": result.compute_units,
            "images": [{"width": i.width, "height": i.height, "nsfw_score": i.nsfw_score} for i in result.images],
        }
        fields: dict[str, Any] = {"job_id": job.id, "status": "succeeded", "meta": json.dumps(meta)}
        fields.update({f"png{i.index}": i.png for i in result.images})
        # The result is written before the entry is acked: a crash in between re-runs the job, and the
        # bot applies a job's result idempotently, so nothing is lost and nothing is posted twice.
        await self.redis.xadd(f"{PREFIX}results", fields)
        return await self._finish(job, None, None)

    async def fail(self, job: ClaimedJob, error: str, *, retryable: bool = True) -> str:
        cancelled = await self.redis.exists(f"{PREFIX}cancel:{job.id}")
        if cancelled:
            await self._finish(job, {"job_id": job.id, "status": "cancelled", "error": "cancelled"}, None)
            return "cancelled"
        if retryable and job.attempt < job.max_attempts:
            await self._finish(job, None, self._requeue_fields(job, attempts=job.attempt))
            return "queued"
        await self._finish(job, {"job_id": job.id, "status": "failed", "error": error[:4000]}, None)
        return "failed"

    async def release(self, job: ClaimedJob) -> None:
        await self._finish(job, None, self._requeue_fields(job, attempts=job.attempt - 1))

    async def heartbeat(self, worker_id: str, model: str) -> None:
        record = json.dumps(
            {
                "id": worker_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "model": model,
                "heartbeat_at": time.time(),
            }
        )
        ttl = max(10, int(3 * self.settings.heartbeat_seconds))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{PREFIX}worker:{worker_id}", record, ex=ttl)
            pipe.sadd(f"{PREFIX}workers", worker_id)
            await pipe.execute()

    async def worker_stopped(self, worker_id: str) -> None:
        await self.redis.delete(f"{PREFIX}worker:{worker_id}")
        await self.redis.srem(f"{PREFIX}workers", worker_id)

    async def status(self) -> dict[str, Any]:
        depth = running = 0
        for member in await self._candidates():
            try:
                groups = await self.redis.xinfo_groups(self._stream(member))
            except aioredis.ResponseError:
                continue
            for group in groups:
                if _decode(group["name"]) == ENGINES:
                    depth += int(group.get("lag") or 0)
                    running += int(group["pending"])
        workers = []
        for worker_id in await self.redis.smembers(f"{PREFIX}workers"):
            record = await self.redis.get(f"{PREFIX}worker:{_decode(worker_id)}")
            if record is not None:
                workers.append(json.loads(record) | {"alive": True})
        return {"queue_depth": depth, "running": running, "workers": workers}

    async def live_workers(self, model: str) -> int:
        return sum(1 for w in (await self.status())["workers"] if w["model"] == model)

    async def close(self) -> None:
        await self.redis.aclose()
        if self.db is not None:
            await self.db.dispose()
