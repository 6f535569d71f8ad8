"""The Redis Streams backend against a real redis-server: the SQLite queue's semantics, with engines that
share nothing but Redis and bots that apply their results."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from PIL import Image
from sqlalchemy import func, select, update

from bot.config import TINY_MODEL, Settings
from bot.db.models import Image as ImageRow
from bot.db.models import Job, JobStatus, Usage
from bot.db.session import Database
from bot.services.delivery import DeliveryService
from engine.queue.protocol import GeneratedImage, JobResult, LeaseState
from engine.queue.redis import RedisQueue
from tests.factories import add_job
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
    return JobResult(images, gpu_seconds=0.25, compute_units=0.01)


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
    await bot.publish(job_id)
    return job_id


async def test_claim_complete_ack_and_the_bot_applies_the_result_once(
    queues: Any, database: Database, settings: Settings, redis_url: str
) -> None:
    bot, engine = queues(bot=True), queues()
    job_id = await _published(bot, database)
    [claimed] = await engine.claim("w1")
    assert claimed.id == job_id and claimed.attempt == 1 and claimed.params.prompt == "a fox in the snow"
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


async def test_claim_order_is_fair_across_members(queues: Any, database: Database) -> None:
    bot, engine = queues(bot=True), queues()
    # Member 1 floods the queue first; members 2 and 3 arrive later with one job each.
    flood = [await _published(bot, database, user_id=1, age_seconds=100 - i) for i in range(5)]
    second = await _published(bot, database, user_id=2, age_seconds=50)
    third = await _published(bot, database, user_id=3, age_seconds=40)

    assert [job.id for job in await engine.claim("w", limit=4)] == [flood[0], second, third, flood[1]]
    # Member 1 now has two running and nobody else waits: the rest follow in order.
    assert [job.id for job in await engine.claim("w", limit=4)] == flood[2:]


async def test_running_jobs_count_against_a_members_turn(queues: Any, database: Database) -> None:
    bot, engine = queues(bot=True), queues()
    await _published(bot, database, user_id=1, age_seconds=100)
    await engine.claim("w")  # member 1 now has a job running
    await _published(bot, database, user_id=1, age_seconds=90)
    member_2 = await _published(bot, database, user_id=2, age_seconds=10)
    [next_job] = await engine.claim("w")
    assert next_job.id == member_2


async def test_claim_only_takes_models_the_worker_has_loaded(queues: Any, database: Database) -> None:
    bot, engine = queues(bot=True), queues()
    other = await _published(bot, database, model="other/model")
    assert await engine.claim("w", models=[TINY_MODEL]) == []
    [job] = await engine.claim("w", models=["other/model"])
    assert job.id == other and job.params.model == "other/model"


async def test_cancel_before_claim_is_skipped_and_while_running_reaches_the_worker(
    queues: Any, database: Database, redis_url: str
) -> None:
    bot, engine = queues(bot=True), queues()
    queued = await _published(bot, database, user_id=1)
    assert await bot.cancel(queued) == JobStatus.CANCELLED
    assert await _refunded(database, queued)
    assert await engine.claim("w") == []  # the cancelled entry is dropped at claim, not run
    client = aioredis.from_url(redis_url)
    assert await client.keys("atelier:q:*") == []
    await client.aclose()

    running = await _published(bot, database, user_id=2)
    [job] = await engine.claim("w")
    await _pump_until(bot, database, [running], {"running"})
    assert await bot.cancel(running) == "cancelling"
    assert await engine.renew(job) is LeaseState.CANCELLED
    assert await engine.fail(job, "cancelled", retryable=False) == "cancelled"
    await _pump_until(bot, database, [running], {"cancelled"})
    assert await _refunded(database, running)
    assert await bot.cancel("no-such-job") is None


async def test_renewed_lease_keeps_a_long_job_and_an_expired_one_is_taken_over_and_fenced(
    queues: Any, database: Database
) -> None:
    bot = queues(bot=True)
    a, b = queues(lease_seconds=0.4), queues(lease_seconds=0.4)
    job_id = await _published(bot, database)
    [held] = await a.claim("a")
    deadline = time.monotonic() + 1.2  # three leases long
    while time.monotonic() < deadline:
        assert await a.renew(held) is LeaseState.HELD
        assert await b.claim("b") == []  # renewed: not stolen
        await asyncio.sleep(0.1)

    await asyncio.sleep(0.5)  # a stops renewing, as if its engine had died
    [taken] = await b.claim("b")
    assert taken.id == job_id and taken.attempt == 2
    assert await a.renew(held) is LeaseState.LOST
    assert not await a.complete(held, _result())
    assert await a.fail(held, "too late") == "lost"
    assert await b.renew(taken) is LeaseState.HELD

    # Fencing holds against the same engine too: after a stall past its own lease, its old claim is dead.
    await asyncio.sleep(0.5)
    [again] = await b.claim("b")
    assert again.attempt == 3
    assert await b.renew(taken) is LeaseState.LOST
    assert await b.complete(again, _result())
    await _pump_until(bot, database, [job_id], {"succeeded"})
    assert (await _job(database, job_id)).attempts == 3


async def test_retries_back_off_then_fail_for_good_with_the_error_kept(queues: Any, database: Database) -> None:
    bot, engine = queues(bot=True), queues(lease_seconds=0.4)
    job_id = await _published(bot, database, max_attempts=2)
    [first] = await engine.claim("w")
    assert await engine.fail(first, "RuntimeError: CUDA error") == "queued"
    assert await engine.claim("w") == []  # still backing off
    await asyncio.sleep(0.5)
    [second] = await engine.claim("w")
    assert second.attempt == 2
    assert await engine.fail(second, "RuntimeError: CUDA error again") == "failed"
    await _pump_until(bot, database, [job_id], {"failed"})
    job = await _job(database, job_id)
    assert job.error == "RuntimeError: CUDA error again" and job.attempts == 2
    assert await _refunded(database, job_id)


async def test_a_lease_expiring_on_the_last_attempt_fails_the_job(queues: Any, database: Database) -> None:
    bot, engine = queues(bot=True), queues(lease_seconds=0.3)
    job_id = await _published(bot, database, max_attempts=1)
    await engine.claim("dead")
    await asyncio.sleep(0.4)
    assert await engine.claim("live") == []
    await _pump_until(bot, database, [job_id], {"failed"})
    assert "lease expired" in ((await _job(database, job_id)).error or "")
    assert await _refunded(database, job_id)


async def test_release_puts_the_job_back_without_spending_an_attempt(queues: Any, database: Database) -> None:
    bot, engine = queues(bot=True), queues()
    job_id = await _published(bot, database, user_id=1, age_seconds=10)
    later = await _published(bot, database, user_id=2, age_seconds=5)
    [job] = await engine.claim("w")
    await engine.release(job)
    # The released job keeps its creation time, so it is still first in line.
    [again] = await engine.claim("w")
    assert (again.id, again.attempt) == (job_id, 1)
    assert later != job_id


async def test_heartbeats_list_workers_in_status(queues: Any, database: Database) -> None:
    bot, engine = queues(bot=True), queues()
    await engine.heartbeat("engine-a", TINY_MODEL)
    await _published(bot, database, user_id=1, age_seconds=3)
    await _published(bot, database, user_id=2, age_seconds=2)
    [job] = await engine.claim("engine-a")

    status = await bot.status()
    assert (status["queue_depth"], status["running"]) == (1, 1)
    assert status["oldest_queued_seconds"] >= 1.5
    assert status["running_jobs"][0]["job_id"] == job.id and status["running_jobs"][0]["worker"] == "engine-a"
    [worker] = status["workers"]
    assert (worker["id"], worker["model"], worker["alive"]) == ("engine-a", TINY_MODEL, True)
    assert worker["heartbeat_at"] is not None and await bot.live_workers(TINY_MODEL) == 1

    await engine.worker_stopped("engine-a")
    assert (await bot.status())["workers"] == []


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
        await bots[0].publish(job_id)

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

    # Two bots racing to post each result: exactly one of them gets to.
    deliveries = [DeliveryService(database), DeliveryService(database)]
    assert sorted(job.id for job in await deliveries[0].pending()) == sorted(jobs)
    for job_id in jobs:
        assert sorted(await asyncio.gather(*(d.claim(job_id) for d in deliveries))) == [False, True]
    assert await deliveries[1].pending() == []


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
    await bot.publish(job_id)
    upload.unlink()  # engines elsewhere never see the bot's disk

    [claimed] = await first.claim("w1")
    local = Path(claimed.params.init_image or "")
    assert local.is_relative_to(tmp_path / "host-b") and local.read_bytes() == png
    await first.release(claimed)  # a shutdown: the job goes back, with its image
    assert not local.exists()

    [again] = await second.claim("w2")
    assert Path(again.params.init_image or "").is_relative_to(tmp_path / "host-c")
    assert Path(again.params.init_image or "").read_bytes() == png
    assert await second.complete(again, _result())
    assert not Path(again.params.init_image or "").exists()  # the copy lives as long as the job runs


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
