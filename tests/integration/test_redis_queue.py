"""The Redis Streams backend against a real redis-server: the SQLite queue's semantics, with engines that
share nothing but Redis and bots that apply their results."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from PIL import Image
from sqlalchemy import func, select, update

from bot.config import Settings
from bot.db.models import Image as ImageRow
from bot.db.models import Job, Usage
from bot.services.delivery import DeliveryService
from engine.config import TINY_MODEL
from engine.contract import GeneratedImage, JobResult, JobStatus, LeaseState
from engine.queue.database import Database
from engine.queue.redis import RedisQueue
from tests.factories import add_job, queued_job
from tests.redis_server import redis_server  # noqa: F401  (fixture)


@pytest.fixture
async def redis_url(redis_server: str) -> AsyncIterator[str]:  # noqa: F811
    client = aioredis.from_url(redis_server)
    await client.flushall()
    await client.aclose()
    yield redis_server


@pytest.fixture
async def queues(redis_url: str, settings: Settings, database: Database) -> AsyncIterator[Any]:
    """``make(bot=True)``: a queue as the bot holds it (with the database); otherwise as an engine does."""
    made: list[RedisQueue] = []

    def make(*, bot: bool = False, lease_seconds: float | None = None, data_dir: Path | None = None) -> RedisQueue:
        engine_settings = settings.model_copy(
            update={"lease_seconds": lease_seconds or settings.lease_seconds, "data_dir": data_dir or settings.data_dir}
        )
        queue = RedisQueue(redis_url, settings=engine_settings, database=database if bot else None)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.close()


async def _job(db: Database, job_id: str) -> Job:
    async with db.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def _refunded(db: Database, job_id: str) -> bool:
    async with db.sessions() as session:
        usage = await session.get(Usage, job_id)
        return usage is not None and usage.refunded_at is not None


async def _image_rows(db: Database) -> int:
    async with db.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(ImageRow))).scalar_one())


def _result(index_count: int = 1) -> JobResult:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buffer, format="PNG")
    images = [GeneratedImage(i, buffer.getvalue(), 64, 64) for i in range(index_count)]
    return JobResult(images, gpu_seconds=0.25)


async def _pump_until(
    bot: RedisQueue, db: Database, job_ids: list[str], statuses: set[str], timeout: float = 20
) -> None:
    stop = asyncio.Event()
    pumping = asyncio.create_task(bot.pump(stop, block_ms=20))
    try:
        async with asyncio.timeout(timeout):
            while not all([(await _job(db, j)).status in statuses for j in job_ids]):
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await pumping


async def _published(bot: RedisQueue, db: Database, **job: Any) -> str:
    job_id = await add_job(db, **job)
    await bot.publish(await queued_job(db, job_id))
    return job_id


async def test_claim_complete_ack_and_the_bot_applies_the_result_once(
    queues: Any, database: Database, settings: Settings, redis_url: str
) -> None:
    bot, engine = queues(bot=True), queues()
    job_id = await _published(bot, database)
    [claimed] = await engine.claim("w1")
    assert claimed.id == job_id and claimed.attempt == 1 and claimed.spec.member_prompt == "a fox in the snow"
    assert await engine.claim("w2") == []

    await _pump_until(bot, database, [job_id], {"running"})  # the claim reached the bot's database
    assert (await _job(database, job_id)).attempts == 1
    assert await engine.complete(claimed, _result(2))

    client = aioredis.from_url(redis_url)
    [(_, event)] = await client.xrange("atelier:results")  # the result, PNG bytes included
    await _pump_until(bot, database, [job_id], {"succeeded"})
    job = await _job(database, job_id)
    assert [image.index for image in job.images] == [0, 1] and Path(job.images[0].path).is_file()
    assert job.gpu_seconds == 0.25 and not await _refunded(database, job_id)
    # Acked work leaves nothing behind: no stream, no result bytes.
    assert await client.keys("atelier:q:*") == [] and await client.xlen("atelier:results") == 0

    # The same result delivered again (a bot that died before acking it) changes nothing.
    await client.xadd("atelier:results", event)
    stop = asyncio.Event()
    pumping = asyncio.create_task(bot.pump(stop, block_ms=20))
    async with asyncio.timeout(10):
        while await client.xlen("atelier:results"):
            await asyncio.sleep(0.02)
    stop.set()
    await pumping
    assert await _image_rows(database) == 2 and (await _job(database, job_id)).status == JobStatus.SUCCEEDED
    await client.aclose()

    status = await bot.status()
    assert (status["queue_depth"], status["running"], status["results_backlog"]) == (0, 0, 0)


async def test_results_claimed_by_a_bot_that_died_are_applied_by_another(
    queues: Any, database: Database, settings: Settings, redis_url: str
) -> None:
    bot, engine = queues(bot=True), queues()
    job_id = await _published(bot, database)
    [claimed] = await engine.claim("w")
    assert await engine.complete(claimed, _result())
    client = aioredis.from_url(redis_url)
    await client.xgroup_create("atelier:results", "bots", id="0", mkstream=True)
    # A bot process takes the events and dies before applying them.
    taken = await client.xreadgroup("bots", "dead-bot", {"atelier:results": ">"}, count=10)
    assert len(taken[0][1]) == 2  # started, succeeded
    await client.aclose()

    survivor = RedisQueue(redis_url, settings=settings, database=database, results_reclaim_seconds=0.2)
    try:
        await _pump_until(survivor, database, [job_id], {"succeeded"})
    finally:
        await survivor.close()
    assert await _image_rows(database) == 1


async def test_a_cancelled_entry_is_dropped_at_claim_and_leaves_no_keys(
    queues: Any, database: Database, redis_url: str
) -> None:
    bot, engine = queues(bot=True), queues()
    queued = await _published(bot, database, user_id=1)
    assert await bot.cancel(queued) == JobStatus.CANCELLED
    assert await engine.claim("w") == []  # dropped at claim, not run
    client = aioredis.from_url(redis_url)
    assert await client.keys("atelier:q:*") == []
    await client.aclose()


async def test_leases_follow_the_clock_a_renewed_one_holds_an_abandoned_one_is_taken_over(
    queues: Any, database: Database
) -> None:
    """The contract suite sets expiry directly; here real time passes. Generous margins: a stall of the
    test process only makes an abandoned lease older, and a renewal would have to be late by a whole lease
    (2 s) for the held job to be taken."""
    bot = queues(bot=True)
    a, b = queues(lease_seconds=2.0), queues(lease_seconds=2.0)
    job_id = await _published(bot, database)
    [held] = await a.claim("a")
    for _ in range(3):  # three renewals, a lease and a half in all
        await asyncio.sleep(1.0)
        assert await a.renew(held) is LeaseState.HELD
        assert await b.claim("b") == []  # renewed: not stolen

    await asyncio.sleep(2.2)  # a stops renewing, as if its engine had died
    [taken] = await b.claim("b")
    assert (taken.id, taken.attempt) == (job_id, 2)
    assert await a.renew(held) is LeaseState.LOST
    assert await b.complete(taken, _result())
    await _pump_until(bot, database, [job_id], {"succeeded"})
    assert (await _job(database, job_id)).attempts == 2


async def test_a_result_applied_before_its_start_event_still_counts_its_attempt(
    queues: Any, database: Database, redis_url: str
) -> None:
    """Two bots pump the results stream; one may apply a job's "succeeded" before another has applied its
    "started" (or while that one waits to be retried). The job ran once: it counts one attempt."""
    bot, engine = queues(bot=True), queues()
    job_id = await _published(bot, database)
    [claimed] = await engine.claim("w")
    assert await engine.complete(claimed, _result())
    client = aioredis.from_url(redis_url)
    events = await client.xrange("atelier:results")
    await client.aclose()
    assert [fields[b"event"] for _, fields in events] == [b"started", b"succeeded"]

    for entry_id, fields in reversed(events):
        await bot._apply_entry("atelier:results", entry_id, fields)
    job = await _job(database, job_id)
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)


# ---------------------------------------------------------------- engines as real processes


class _CountingQueue(RedisQueue):
    """A bot's queue that counts the outcomes engines report, per job."""

    def __init__(self, *args: Any, reported: Counter[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reported = reported

    async def _apply(self, event: str, job_id: str, fields: dict[str, Any]) -> None:
        self.reported[event, job_id] += 1
        await super()._apply(event, job_id, fields)


def _engine(env: dict[str, str], data_dir: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    # Logs go to a file: an unread pipe would fill up and stall the engine.
    with (data_dir / "engine.log").open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "engine", "--tiny"],
            env={**env, "ATELIER_DATA_DIR": str(data_dir)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
async def test_two_engine_processes_one_killed_mid_job_every_job_completes_and_is_delivered_once(
    redis_url: str, settings: Settings, database: Database, settings_env: dict[str, str], tmp_path: Path
) -> None:
    from engine.pipelines.registry import resolve_model

    # Built once here rather than by both engines at once on a small machine.
    await asyncio.to_thread(resolve_model, TINY_MODEL, settings.models_dir)
    reported: Counter[tuple[str, str]] = Counter()
    # Two bot processes' worth of pumps, each with its own database connection.
    bot_databases = [Database(settings.db_url) for _ in range(2)]
    bots = [_CountingQueue(redis_url, settings=settings, database=db, reported=reported) for db in bot_databases]
    # A job of several denoising steps, to be killed mid-run, and quick ones, one a grid of two images.
    slow = await add_job(database, user_id=1, width=128, height=128, steps=16, age_seconds=5)
    quick = [await add_job(database, user_id=u, seed=u, age_seconds=4 - u) for u in (2, 3)]
    jobs = [slow, *quick]
    async with database.transaction() as session:
        await session.execute(update(Job).where(Job.id == quick[0]).values(count=2))
        await session.execute(update(Job).values(channel_id=42))  # so that delivery picks them up
    for job_id in jobs:
        await bots[0].publish(await queued_job(database, job_id))

    # The engines share Redis and the models cache, nothing else: each has its own data directory.
    # One job per claim, so that the engine killed holds the slow job alone and only it runs twice.
    env = {**settings_env, "ATELIER_QUEUE_URL": redis_url, "ATELIER_MAX_BATCH": "1"}
    engines = {p.pid: p for p in (_engine(env, tmp_path / "engine-a"), _engine(env, tmp_path / "engine-b"))}
    stop = asyncio.Event()
    pumps = [asyncio.create_task(bot.pump(stop, block_ms=50)) for bot in bots]
    try:
        # Generous: on a busy 2-core machine two engines loading torch at once take a while.
        async with asyncio.timeout(180):
            # Its first denoising step reported: the engine is mid-job.
            while (await _job(database, slow)).progress_step is None:
                await asyncio.sleep(0.02)
            [owner] = [r["worker"] for r in (await bots[0].status())["running_jobs"] if r["job_id"] == slow]
            victim = engines.pop(int(owner.rsplit("-", 2)[1]))  # worker ids are host-pid-suffix
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
            while not all([(await _job(database, j)).status == JobStatus.SUCCEEDED for j in jobs]):
                await asyncio.sleep(0.05)
        status = await bots[0].status()
    finally:
        stop.set()
        await asyncio.gather(*pumps)
        for process in engines.values():
            process.terminate()
        for process in engines.values():
            assert process.wait(timeout=60) == 0
        for db in bot_databases:
            await db.dispose()
        for bot in bots:
            await bot.close()

    # Each job's outcome was reported and applied once; the killed attempt left nothing behind.
    assert {job_id: reported["succeeded", job_id] for job_id in jobs} == dict.fromkeys(jobs, 1)
    assert await _image_rows(database) == 4
    assert [(await _job(database, j)).attempts for j in jobs] == [2, 1, 1]
    assert (status["queue_depth"], status["running"]) == (0, 0)
    [survivor] = [w for w in status["workers"] if w["pid"] in engines]
    assert survivor["alive"] and survivor["model"] == TINY_MODEL

    # Two bots racing to post the results: each result goes to exactly one of them.
    deliveries = [DeliveryService(database), DeliveryService(Database(database.url))]
    assert sorted(job.id for job in await deliveries[0].pending()) == sorted(jobs)
    try:
        shares = await asyncio.gather(*(d.claim_ready(limit=1) for d in deliveries for _ in jobs))
    finally:
        await deliveries[1].db.dispose()
    assert sorted(job.id for share in shares for job in share) == sorted(jobs)
    assert await deliveries[0].pending() == []


async def test_an_init_image_travels_with_its_job_to_engines_on_other_hosts(
    queues: Any, database: Database, settings: Settings, tmp_path: Path
) -> None:
    bot = queues(bot=True)
    first, second = queues(data_dir=tmp_path / "host-b"), queues(data_dir=tmp_path / "host-c")
    upload = settings.data_dir / "uploads" / "fox.png"
    upload.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), "orange").save(upload)
    png = upload.read_bytes()
    job_id = await add_job(database)
    async with database.transaction() as session:
        await session.execute(update(Job).where(Job.id == job_id).values(kind="img2img", init_image=str(upload)))
    await bot.publish(await queued_job(database, job_id))
    upload.unlink()  # engines elsewhere never see the bot's disk

    [claimed] = await first.claim("w1")
    local = Path(claimed.spec.init_image or "")
    assert local.is_relative_to(tmp_path / "host-b") and local.read_bytes() == png
    await first.release(claimed)  # a shutdown: the job goes back, with its image
    assert not local.exists()

    [again] = await second.claim("w2")
    assert Path(again.spec.init_image or "").is_relative_to(tmp_path / "host-c")
    assert Path(again.spec.init_image or "").read_bytes() == png
    assert await second.complete(again, _result())
    assert not Path(again.spec.init_image or "").exists()  # the copy lives as long as the job runs


async def test_an_idle_engine_wakes_when_a_job_is_published(queues: Any, database: Database) -> None:
    bot, engine = queues(bot=True), queues()
    stop = asyncio.Event()
    await asyncio.wait_for(engine.wait_for_work(600, stop), 10)  # the first call subscribes
    assert await engine.claim("w") == []
    waiting = asyncio.create_task(engine.wait_for_work(600, stop))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    job_id = await _published(bot, database)
    await asyncio.wait_for(waiting, 10)  # long before the 600 s poll interval
    [claimed] = await engine.claim("w")
    assert claimed.id == job_id

    waiting = asyncio.create_task(engine.wait_for_work(600, stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(waiting, 10)


async def test_jobs_a_restarted_redis_forgot_are_published_again(
    queues: Any, database: Database, redis_url: str
) -> None:
    bot, engine = queues(bot=True), queues()
    waiting = await _published(bot, database, user_id=1, age_seconds=120)
    running = await _published(bot, database, user_id=2, age_seconds=110)
    [claimed] = await engine.claim("w", limit=1)
    await _pump_until(bot, database, [claimed.id], {"running"})
    assert await bot.republish_lost() == []  # Redis holds both: nothing to do

    client = aioredis.from_url(redis_url)
    await client.flushall()  # a restart of a Redis that persists nothing
    await client.aclose()
    assert sorted(await bot.republish_lost()) == sorted([waiting, running])
    assert {job.id for job in await engine.claim("w2", limit=2)} == {waiting, running}
