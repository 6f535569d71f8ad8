"""The JobQueue contract, one suite run unchanged over both backends: SQLite and a real redis-server.

Each test drives the queue only through the protocol in engine/contract.py, plus a small adapter per backend
for what the protocol leaves to the backend: how a job is put on it (a committed row, and for Redis a stream
entry), how the bot learns outcomes (SQLite: at once; Redis: its results pump), and how time passes for a
lease (an expired lease or a finished back-off is set directly, so no test waits on a clock).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import update

from bot.config import Settings
from bot.db.models import Image, Job, Usage
from engine.config import TINY_MODEL
from engine.contract import ClaimedJob, GeneratedImage, JobQueue, JobResult, JobStatus, LeaseState, utcnow
from engine.queue import ledger
from engine.queue.database import Database
from engine.queue.redis import RedisQueue, _Lease
from engine.queue.sqlite import SqliteQueue
from tests.factories import add_job, queued_job, tiny_png
from tests.redis_server import redis_server  # noqa: F401  (fixture)


class Backend:
    """``bot`` is the queue as the bot holds it; ``engine()`` makes one as an engine process holds it."""

    bot: JobQueue

    def __init__(self, database: Database, settings: Settings) -> None:
        self.db = database
        self.settings = settings
        self.made: list[JobQueue] = []

    def engine(self) -> JobQueue:
        raise NotImplementedError

    async def submit(self, **job: Any) -> str:
        job_id = await add_job(self.db, **job)
        await self.bot.publish(await queued_job(self.db, job_id))
        return job_id

    async def make_claimable(self, job: ClaimedJob) -> None:
        """As if the job's lease had run out (or its retry back-off were over) this instant."""
        raise NotImplementedError

    async def settle(self) -> None:
        """Let the bot record every outcome the engines have reported so far."""

    async def row(self, job_id: str) -> Job:
        await self.settle()
        async with self.db.sessions() as session:
            job = await session.get(Job, job_id)
            assert job is not None
            return job

    async def refunded(self, job_id: str) -> bool:
        await self.settle()
        async with self.db.sessions() as session:
            usage = await session.get(Usage, job_id)
            return usage is not None and usage.refunded_at is not None

    async def close(self) -> None:
        for queue in self.made:
            await queue.close()


class SqliteBackend(Backend):
    def __init__(self, database: Database, settings: Settings) -> None:
        super().__init__(database, settings)
        self.bot = self.engine()

    def engine(self) -> JobQueue:
        queue = SqliteQueue(self.db, self.settings)
        self.made.append(queue)
        return queue

    async def make_claimable(self, job: ClaimedJob) -> None:
        past = utcnow() - timedelta(seconds=1)
        async with self.db.transaction() as session:
            await session.execute(update(Job).where(Job.id == job.id).values(lease_expires_at=past, available_at=past))


class RedisBackend(Backend):
    def __init__(self, database: Database, settings: Settings, url: str) -> None:
        super().__init__(database, settings)
        self.url = url
        self.bot = self._queue(database)

    def _queue(self, database: Database | None) -> RedisQueue:
        queue = RedisQueue(self.url, settings=self.settings, database=database)
        self.made.append(queue)
        return queue

    def engine(self) -> JobQueue:
        return self._queue(None)  # engines share nothing with the bot but Redis

    async def make_claimable(self, job: ClaimedJob) -> None:
        # A lease is the entry's idle time in its consumer group: make it look idle for ten leases.
        # JUSTID leaves the delivery count, the fencing token, as it is.
        lease = _Lease.of(job)
        assert isinstance(self.bot, RedisQueue)
        key = f"{self.bot.prefix}q:{lease.model}:{lease.member}"
        await self.bot.redis.xclaim(
            key, "engines", lease.consumer, 0, [lease.entry_id], idle=10 * self.bot.lease_ms, justid=True
        )

    async def settle(self) -> None:
        assert isinstance(self.bot, RedisQueue)
        await self.bot.pump_pending()


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, database: Database, settings: Settings) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        made: Backend = SqliteBackend(database, settings)
    else:
        url = request.getfixturevalue("redis_server")
        client = aioredis.from_url(url)
        await client.flushall()
        await client.aclose()
        made = RedisBackend(database, settings, url)
    yield made
    await made.close()


def _result(images: int = 1) -> JobResult:
    png = tiny_png(64, 64)
    return JobResult([GeneratedImage(i, png, 64, 64) for i in range(images)], gpu_seconds=0.5)


async def test_a_claimed_job_runs_once_and_its_result_is_recorded(backend: Backend) -> None:
    engine = backend.engine()
    job_id = await backend.submit()
    [claimed] = await engine.claim("w1")
    assert (claimed.id, claimed.attempt, claimed.spec.model) == (job_id, 1, TINY_MODEL)
    assert (await backend.row(job_id)).status == JobStatus.RUNNING
    assert await engine.claim("w2") == []

    assert await engine.complete(claimed, _result(images=2))
    job = await backend.row(job_id)
    assert (job.status, job.attempts, job.gpu_seconds) == (JobStatus.SUCCEEDED, 1, 0.5)
    assert [image.index for image in sorted(job.images, key=lambda i: i.index)] == [0, 1]
    assert all(ledger.image_path(backend.settings.images_dir, job_id, i).is_file() for i in (0, 1))
    assert not await backend.refunded(job_id)


async def test_claims_are_fair_across_members(backend: Backend) -> None:
    engine = backend.engine()
    # Member 1 floods the queue first; members 2 and 3 arrive later with one job each.
    flood = [await backend.submit(user_id=1, age_seconds=100 - i) for i in range(5)]
    second = await backend.submit(user_id=2, age_seconds=50)
    third = await backend.submit(user_id=3, age_seconds=40)

    assert [job.id for job in await engine.claim("w", limit=4)] == [flood[0], second, third, flood[1]]
    # Member 1 now has two running and nobody else waits: the rest follow in order.
    assert [job.id for job in await engine.claim("w", limit=4)] == flood[2:]


async def test_running_jobs_count_against_a_members_turn(backend: Backend) -> None:
    engine = backend.engine()
    await backend.submit(user_id=1, age_seconds=100)
    await engine.claim("w")  # member 1 now has a job running
    await backend.submit(user_id=1, age_seconds=90)
    member_2 = await backend.submit(user_id=2, age_seconds=10)
    assert [job.id for job in await engine.claim("w")] == [member_2]


async def test_an_engine_claims_only_the_models_it_has_loaded(backend: Backend) -> None:
    engine = backend.engine()
    other = await backend.submit(model="other/model")
    assert await engine.claim("w", models=[TINY_MODEL]) == []
    [job] = await engine.claim("w", models=["other/model"])
    assert (job.id, job.spec.model) == (other, "other/model")


async def test_a_renewed_lease_holds_and_an_expired_one_is_taken_over_and_fenced(backend: Backend) -> None:
    dead, live = backend.engine(), backend.engine()
    job_id = await backend.submit()
    [old] = await dead.claim("dead")
    assert await dead.renew(old) is LeaseState.HELD
    assert await live.claim("live") == []  # held: not stolen

    await backend.make_claimable(old)  # the dead engine stopped renewing
    [new] = await live.claim("live")
    assert (new.id, new.attempt) == (job_id, 2)
    assert await dead.renew(old) is LeaseState.LOST
    assert not await dead.complete(old, _result())
    assert await dead.fail(old, "too late") == "lost"
    assert await live.renew(new) is LeaseState.HELD
    assert await live.complete(new, _result())
    job = await backend.row(job_id)
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2)


async def test_a_lease_expiring_on_the_last_attempt_fails_the_job_and_refunds(backend: Backend) -> None:
    engine = backend.engine()
    job_id = await backend.submit(max_attempts=1)
    [job] = await engine.claim("dead")
    await backend.make_claimable(job)
    assert await engine.claim("live") == []
    row = await backend.row(job_id)
    assert row.status == JobStatus.FAILED and "lease expired" in (row.error or "")
    assert await backend.refunded(job_id)


async def test_a_retryable_failure_backs_off_then_fails_for_good_with_its_error(backend: Backend) -> None:
    engine = backend.engine()
    job_id = await backend.submit(max_attempts=2)
    [first] = await engine.claim("w")
    assert await engine.fail(first, "CUDA error") == JobStatus.QUEUED
    assert await engine.claim("w") == []  # still backing off
    await backend.make_claimable(first)
    [second] = await engine.claim("w")
    assert (second.id, second.attempt) == (job_id, 2)
    assert await engine.fail(second, "CUDA error again") == JobStatus.FAILED

    job = await backend.row(job_id)
    assert (job.status, job.error, job.attempts) == (JobStatus.FAILED, "CUDA error again", 2)
    assert await backend.refunded(job_id)


async def test_a_permanent_failure_ends_the_job_at_once(backend: Backend) -> None:
    engine = backend.engine()
    job_id = await backend.submit(max_attempts=3)
    [job] = await engine.claim("w")
    assert await engine.fail(job, "width must be a multiple of 8", retryable=False) == JobStatus.FAILED
    assert await engine.claim("w") == []
    row = await backend.row(job_id)
    assert (row.status, row.error, row.attempts) == (JobStatus.FAILED, "width must be a multiple of 8", 1)
    assert await backend.refunded(job_id)


async def test_cancel_drops_a_queued_job_and_reaches_the_worker_of_a_running_one(backend: Backend) -> None:
    engine = backend.engine()
    queued = await backend.submit(user_id=1, age_seconds=2)
    assert await backend.bot.cancel(queued) == JobStatus.CANCELLED
    assert await backend.refunded(queued)
    assert await engine.claim("w") == []

    running = await backend.submit(user_id=2)
    [job] = await engine.claim("w")
    await backend.settle()
    assert await backend.bot.cancel(running) == "cancelling"
    assert await engine.renew(job) is LeaseState.CANCELLED
    assert await engine.fail(job, "cancelled", retryable=False) == JobStatus.CANCELLED
    assert (await backend.row(running)).status == JobStatus.CANCELLED
    assert await backend.refunded(running)
    assert await backend.bot.cancel("no-such-job") is None


async def test_release_puts_the_job_back_first_in_line_without_spending_an_attempt(backend: Backend) -> None:
    engine = backend.engine()
    job_id = await backend.submit(user_id=1, age_seconds=10)
    later = await backend.submit(user_id=2, age_seconds=5)
    [job] = await engine.claim("w")
    await engine.release(job)
    [again, then] = await engine.claim("w", limit=2)
    assert (again.id, again.attempt, then.id) == (job_id, 1, later)


async def test_complete_many_records_a_batch_and_a_lost_lease_loses_only_its_own_job(backend: Backend) -> None:
    engine, other = backend.engine(), backend.engine()
    ids = [await backend.submit(user_id=i, age_seconds=10 - i) for i in range(3)]
    claimed = await engine.claim("w", limit=3)
    assert [job.id for job in claimed] == ids
    stale = claimed[1]
    await backend.make_claimable(stale)
    [retaken] = await other.claim("other")  # another engine has that job now
    assert retaken.id == stale.id
    newer = JobResult([GeneratedImage(0, tiny_png(64, 64, "red"), 64, 64)], gpu_seconds=0.2)
    assert await other.complete(retaken, newer)

    assert await engine.complete_many([(job, _result()) for job in claimed]) == [True, False, True]
    # The stale engine's image never replaces the one recorded by the engine that held the lease.
    await backend.settle()
    assert ledger.image_path(backend.settings.images_dir, stale.id, 0).read_bytes() == tiny_png(64, 64, "red")
    for job in claimed:
        row = await backend.row(job.id)
        if job is stale:
            assert (row.status, row.gpu_seconds) == (JobStatus.SUCCEEDED, 0.2)  # the newer result stands
        else:
            assert (row.status, row.gpu_seconds, len(row.images)) == (JobStatus.SUCCEEDED, 0.5, 1)


async def test_heartbeats_list_live_engines_and_status_counts_the_queue(backend: Backend) -> None:
    engine = backend.engine()
    await engine.heartbeat("engine-a", TINY_MODEL)
    await backend.submit(user_id=1, age_seconds=3)
    await backend.submit(user_id=2, age_seconds=2)
    [job] = await engine.claim("engine-a")
    await backend.settle()

    status = await backend.bot.status()
    assert (status["queue_depth"], status["running"]) == (1, 1)
    assert status["oldest_queued_seconds"] >= 1.5
    [running] = status["running_jobs"]
    assert (running["job_id"], running["worker"]) == (job.id, "engine-a")
    [worker] = status["workers"]
    assert (worker["id"], worker["model"], worker["alive"]) == ("engine-a", TINY_MODEL, True)
    assert await backend.bot.live_workers(TINY_MODEL) == 1
    assert await backend.bot.live_workers("other/model") == 0

    await engine.worker_stopped("engine-a")
    assert (await backend.bot.status())["workers"] == []
    assert await backend.bot.live_workers(TINY_MODEL) == 0


async def test_a_job_drawn_again_replaces_the_image_rows_of_its_earlier_result(backend: Backend) -> None:
    engine = backend.engine()
    job_id = await backend.submit()
    async with backend.db.transaction() as session:  # what an earlier draw of this job left
        session.add(Image(job_id=job_id, index=0, path="/old/0.png", width=8, height=8, size_bytes=1, sha256="0" * 64))
    [claimed] = await engine.claim("w")
    assert await engine.complete(claimed, _result(images=2))
    job = await backend.row(job_id)
    assert job.status == JobStatus.SUCCEEDED
    paths = sorted(image.path for image in job.images)
    assert paths == sorted(str(ledger.image_path(backend.settings.images_dir, job_id, i)) for i in (0, 1))


async def test_a_result_without_images_is_still_recorded(backend: Backend) -> None:
    engine = backend.engine()
    job_id = await backend.submit()
    [claimed] = await engine.claim("w")
    assert await engine.complete(claimed, JobResult(images=[], gpu_seconds=0.1))
    job = await backend.row(job_id)
    assert (job.status, job.images) == (JobStatus.SUCCEEDED, [])


async def test_a_repairs_plan_reaches_the_engine_and_its_mask_and_caption_are_recorded(backend: Backend) -> None:
    import base64

    plan = {"mode": "repair", "action": "remove", "target": "the car", "mask": {"threshold": 0.4}}
    engine = backend.engine()
    job_id = await backend.submit(kind="repair", plan=plan)
    [claimed] = await engine.claim("w")
    assert (claimed.spec.kind, claimed.spec.plan) == ("repair", plan)
    mask = tiny_png()
    extra = {"mask_png": base64.b64encode(mask).decode(), "mask_coverage": 0.25}
    assert await engine.complete(claimed, JobResult([GeneratedImage(0, tiny_png(), 64, 64)], 0.1, extra))
    job = await backend.row(job_id)
    assert job.status == JobStatus.SUCCEEDED and job.plan == plan
    assert job.outcome is not None and job.outcome["mask_coverage"] == 0.25
    # The mask's bytes became a file beside the image; the row names it.
    assert open(job.outcome["mask"], "rb").read() == mask
    assert job.outcome["mask"].endswith(f"{job_id}-mask.png")
