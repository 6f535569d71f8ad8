"""The Redis Streams backend against a real redis-server: same semantics as the SQLite queue."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from PIL import Image
from sqlalchemy import func, select

from bot.config import Settings
from bot.db.models import Image as ImageRow
from bot.db.models import Job, JobStatus
from bot.db.session import Database
from bot.services.delivery import DeliveryService
from engine.queue.protocol import GeneratedImage, JobResult, LeaseState
from engine.queue.redis_streams import RedisQueue
from tests.factories import add_job
from tests.redis_server import redis_server  # noqa: F401  (fixture)


@pytest.fixture
async def redis_url(redis_server: str) -> AsyncIterator[str]:  # noqa: F811
    client = aioredis.from_url(redis_server)
    await client.flushall()
    await client.aclose()
    yield redis_server


def _queue(url: str, settings: Settings, database: Database | None) -> RedisQueue:
    return RedisQueue(url, settings=settings, database=Database(database.url) if database else None)


async def _job(db: Database, job_id: str) -> Job:
    async with db.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


def _result() -> JobResult:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buffer, format="PNG")
    return JobResult([GeneratedImage(0, buffer.getvalue(), 64, 64)], gpu_seconds=0.25, compute_units=0.01)


async def _pump_until(
    queue: RedisQueue, db: Database, job_ids: list[str], statuses: set[str], timeout: float = 60
) -> None:
    stop = asyncio.Event()
    pumping = asyncio.create_task(queue.pump(stop, block_ms=50))
    try:
        async with asyncio.timeout(timeout):
            while not all([(await _job(db, j)).status in statuses for j in job_ids]):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await pumping


async def test_publish_claim_complete_and_the_bot_applies_the_result(
    redis_url: str, settings: Settings, database: Database
) -> None:
    bot, engine = _queue(redis_url, settings, database), _queue(redis_url, settings, None)
    job_id = await add_job(database)
    await bot.publish(job_id)
    [claimed] = await engine.claim("w1")
    assert claimed.id == job_id and claimed.attempt == 1 and claimed.params.prompt == "a fox in the snow"
    assert await engine.claim("w2") == []
    assert await engine.complete(claimed, _result())
    await _pump_until(bot, database, [job_id], {"succeeded"})
    job = await _job(database, job_id)
    assert job.images[0].size_bytes > 0 and Path(job.images[0].path).is_file()
    status = await bot.status()
    assert (status["queue_depth"], status["running"]) == (0, 0)
    await bot.close()
    await engine.close()


async def test_claims_are_fair_across_members(redis_url: str, settings: Settings, database: Database) -> None:
    bot, engine = _queue(redis_url, settings, database), _queue(redis_url, settings, None)
    flood = [await add_job(database, user_id=1, age_seconds=10 - i) for i in range(3)]
    for job_id in flood:
        await bot.publish(job_id)
    late = await add_job(database, user_id=2)
    await bot.publish(late)
    order = [job.id for job in await engine.claim("w", limit=4)]
    assert order == [flood[0], late, flood[1], flood[2]]
    await bot.close()
    await engine.close()


async def test_cancel_before_claim_and_while_running(redis_url: str, settings: Settings, database: Database) -> None:
    bot, engine = _queue(redis_url, settings, database), _queue(redis_url, settings, None)
    queued, running = await add_job(database, age_seconds=2), await add_job(database, user_id=2, age_seconds=1)
    for job_id in (queued, running):
        await bot.publish(job_id)
    [first] = await engine.claim("w")
    assert first.id == queued
    assert await bot.cancel(running) == JobStatus.CANCELLED  # still queued in the database
    assert await engine.claim("w") == []  # the engine skips a cancelled entry
    assert await bot.cancel(queued) == JobStatus.CANCELLED
    assert await engine.renew(first) is LeaseState.CANCELLED
    assert await engine.fail(first, "cancelled", retryable=False) == "cancelled"
    assert (await _job(database, queued)).status == JobStatus.CANCELLED
    await bot.close()
    await engine.close()


async def test_renewed_leases_are_kept_and_expired_ones_taken_over(
    redis_url: str, settings: Settings, database: Database
) -> None:
    settings.lease_seconds = 0.3
    bot, a, b = (
        _queue(redis_url, settings, database),
        _queue(redis_url, settings, None),
        _queue(redis_url, settings, None),
    )
    job_id = await add_job(database, max_attempts=2)
    await bot.publish(job_id)
    [held] = await a.claim("a")
    for _ in range(4):
        await asyncio.sleep(0.15)
        assert await a.renew(held) is LeaseState.HELD
    assert await b.claim("b") == []  # a long job that keeps renewing is not stolen

    await asyncio.sleep(0.5)  # a stops renewing: its engine died
    [taken] = await b.claim("b")
    assert taken.id == job_id and taken.attempt == 2
    assert await a.renew(held) is LeaseState.LOST
    assert await b.complete(taken, _result())
    assert not await a.complete(held, _result())

    await asyncio.sleep(0.5)
    assert await b.claim("b") == []
    for queue in (bot, a, b):
        await queue.close()


async def test_attempts_run_out_into_a_failure_with_its_error(
    redis_url: str, settings: Settings, database: Database
) -> None:
    settings.lease_seconds = 0.2
    bot, engine = _queue(redis_url, settings, database), _queue(redis_url, settings, None)
    job_id = await add_job(database, max_attempts=1)
    await bot.publish(job_id)
    await engine.claim("dead")
    await asyncio.sleep(0.4)
    assert await engine.claim("live") == []
    await _pump_until(bot, database, [job_id], {"failed"})
    assert "lease expired" in ((await _job(database, job_id)).error or "")
    await bot.close()
    await engine.close()


def _engine(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "engine", "--tiny"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.mark.slow
async def test_two_engines_one_killed_mid_job_every_job_done_and_delivered_once(
    redis_url: str, settings: Settings, database: Database, settings_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**settings_env, "ATELIER_QUEUE_URL": redis_url, "ATELIER_DATA_DIR": str(tmp_path / "engine-host")}
    bot = _queue(redis_url, settings, database)
    client = aioredis.from_url(redis_url)
    slow = await add_job(database, user_id=1, width=256, height=256, steps=20, age_seconds=5)
    await bot.publish(slow)
    first = _engine(env, tmp_path / "a.log")
    try:
        async with asyncio.timeout(120):
            while (
                not await client.xpending("atelier:q:1", "engines")
                or (await client.xpending("atelier:q:1", "engines"))["pending"] == 0
            ):
                await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        quick = [await add_job(database, user_id=u, seed=u) for u in (2, 3, 4)]
        for job_id in quick:
            await bot.publish(job_id)
        second, third = _engine(env, tmp_path / "b.log"), _engine(env, tmp_path / "c.log")
        try:
            await _pump_until(bot, database, [slow, *quick], {"succeeded"}, timeout=240)
        finally:
            for process in (second, third):
                process.terminate()
                process.wait(timeout=60)
    finally:
        first.kill()
    async with database.sessions() as session:
        images = (await session.execute(select(func.count()).select_from(ImageRow))).scalar_one()
    assert images == 4  # one image each: the killed attempt left nothing behind
    delivery = DeliveryService(database)
    for job_id in [slow, *quick]:
        assert await delivery.claim(job_id)
        assert not await delivery.claim(job_id)
    await client.aclose()
    await bot.close()
