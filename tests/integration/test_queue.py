"""SQLite lease-table semantics, against a real migrated database file."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.config import Settings
from bot.db.base import utcnow
from bot.db.models import Job, JobStatus, Usage
from bot.db.session import Database
from engine.queue.protocol import GeneratedImage, JobResult, LeaseState
from engine.queue.sqlite import SqliteQueue
from tests.factories import add_job


async def _job(db: Database, job_id: str) -> Job:
    async with db.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def _usage(db: Database, job_id: str) -> Usage:
    async with db.sessions() as session:
        usage = await session.get(Usage, job_id)
        assert usage is not None
        return usage


async def _expire_lease(db: Database, job_id: str) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def _result() -> JobResult:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
    return JobResult(images=[GeneratedImage(0, buffer.getvalue(), 64, 64)], gpu_seconds=0.5, compute_units=0.01)


async def test_claim_marks_running_and_completes(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    job_id = await add_job(database)
    [claimed] = await queue.claim("w1")
    assert claimed.id == job_id and claimed.attempt == 1
    assert (await _job(database, job_id)).status == JobStatus.RUNNING
    assert await queue.claim("w2") == []

    assert await queue.complete(claimed, _result())
    job = await _job(database, job_id)
    assert job.status == JobStatus.SUCCEEDED and job.gpu_seconds == 0.5
    assert len(job.images) == 1 and job.images[0].width == 64
    assert (settings.images_dir / job_id[:2] / f"{job_id}-0.png").is_file()


async def test_concurrent_claims_from_separate_connections_never_share_a_job(
    database: Database, settings: Settings
) -> None:
    ids = {await add_job(database, user_id=u % 5, age_seconds=30 - u) for u in range(30)}
    databases = [Database(settings.db_url) for _ in range(4)]
    queues = [SqliteQueue(db, settings) for db in databases]
    try:
        claimed: list[str] = []

        async def drain(queue: SqliteQueue, worker: str) -> None:
            while jobs := await queue.claim(worker, limit=2):
                claimed.extend(job.id for job in jobs)

        await asyncio.gather(*(drain(q, f"w{i}") for i, q in enumerate(queues)))
    finally:
        for db in databases:
            await db.dispose()
    assert sorted(claimed) == sorted(ids)


async def test_claim_order_is_fair_across_members(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    # Member 1 floods the queue first; members 2 and 3 arrive later with one job each.
    flood = [await add_job(database, user_id=1, age_seconds=100 - i) for i in range(5)]
    second = await add_job(database, user_id=2, age_seconds=50)
    third = await add_job(database, user_id=3, age_seconds=40)

    order = [job.id for job in await queue.claim("w", limit=4)]
    assert order == [flood[0], second, third, flood[1]]


async def test_running_jobs_count_against_a_members_turn(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    first = await add_job(database, user_id=1, age_seconds=100)
    await queue.claim("w")  # member 1 now has a job running
    later_of_member_1 = await add_job(database, user_id=1, age_seconds=90)
    member_2 = await add_job(database, user_id=2, age_seconds=10)
    [next_job] = await queue.claim("w")
    assert next_job.id == member_2
    assert first != later_of_member_1


async def test_expired_lease_returns_the_job_and_fences_the_old_worker(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    job_id = await add_job(database)
    [old] = await queue.claim("dead-worker")
    await _expire_lease(database, job_id)

    [new] = await queue.claim("live-worker")
    assert new.id == job_id and new.attempt == 2
    assert await queue.renew(old) is LeaseState.LOST
    assert not await queue.complete(old, _result())
    assert await queue.renew(new) is LeaseState.HELD
    assert await queue.complete(new, _result())
    assert (await _job(database, job_id)).status == JobStatus.SUCCEEDED


async def test_job_fails_after_max_attempts_with_its_error_kept(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    job_id = await add_job(database, max_attempts=2)
    [first] = await queue.claim("w")
    assert await queue.fail(first, "RuntimeError: CUDA error") == JobStatus.QUEUED
    async with database.transaction() as session:  # skip the retry back-off
        await session.execute(update(Job).where(Job.id == job_id).values(available_at=utcnow()))
    [second] = await queue.claim("w")
    assert second.attempt == 2
    assert await queue.fail(second, "RuntimeError: CUDA error again") == JobStatus.FAILED

    job = await _job(database, job_id)
    assert job.status == JobStatus.FAILED and job.error == "RuntimeError: CUDA error again"
    assert (await _usage(database, job_id)).refunded_at is not None


async def test_retry_waits_for_its_back_off(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    await add_job(database)
    [job] = await queue.claim("w")
    await queue.fail(job, "transient")
    assert await queue.claim("w") == []


async def test_lease_expiring_on_the_last_attempt_fails_the_job(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    job_id = await add_job(database, max_attempts=1)
    await queue.claim("w")
    await _expire_lease(database, job_id)
    assert await queue.claim("w") == []
    job = await _job(database, job_id)
    assert job.status == JobStatus.FAILED and "lease expired" in (job.error or "")
    assert (await _usage(database, job_id)).refunded_at is not None


async def test_cancel_queued_job_refunds(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    job_id = await add_job(database)
    assert await queue.cancel(job_id) == JobStatus.CANCELLED
    assert await queue.claim("w") == []
    assert (await _usage(database, job_id)).refunded_at is not None
    assert await queue.cancel("no-such-job") is None


async def test_cancel_running_job_reaches_the_worker(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    job_id = await add_job(database)
    [job] = await queue.claim("w")
    assert await queue.cancel(job_id) == "cancelling"
    assert await queue.renew(job) is LeaseState.CANCELLED
    assert await queue.fail(job, "cancelled", retryable=False) == JobStatus.CANCELLED
    assert (await _job(database, job_id)).status == JobStatus.CANCELLED
    assert (await _usage(database, job_id)).refunded_at is not None


async def test_release_puts_the_job_back_without_spending_an_attempt(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    job_id = await add_job(database)
    [job] = await queue.claim("w")
    await queue.release(job)
    [again] = await queue.claim("w")
    assert again.id == job_id and again.attempt == 1


async def test_claim_only_takes_models_the_worker_has_loaded(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    await add_job(database, model="other/model")
    assert await queue.claim("w", models=["atelier/tiny-sd"]) == []
    assert len(await queue.claim("w", models=["other/model"])) == 1


async def test_a_batch_is_recorded_together_and_a_lost_lease_only_loses_its_own_job(
    database: Database, settings: Settings
) -> None:
    queue = SqliteQueue(database, settings)
    ids = [await add_job(database, user_id=i, age_seconds=10 - i) for i in range(3)]
    claimed = await queue.claim("w", limit=3)
    stale = next(job for job in claimed if job.id == ids[1])
    await _expire_lease(database, stale.id)
    [retaken] = await queue.claim("other")  # another engine has the job now
    assert retaken.id == stale.id

    done = await queue.complete_many([(job, _result()) for job in claimed])
    assert done == [job.id != stale.id for job in claimed]
    for job in claimed:
        row = await _job(database, job.id)
        if job.id == stale.id:
            assert row.status == JobStatus.RUNNING and row.images == []  # untouched: it belongs to "other"
            continue
        assert row.status == JobStatus.SUCCEEDED and row.gpu_seconds == 0.5
        assert [(image.index, image.width) for image in row.images] == [(0, 64)]
        assert (await _usage(database, job.id)).gpu_seconds == 0.5


async def test_an_idle_engine_wakes_for_a_new_job_before_its_poll_interval(
    database: Database, settings: Settings
) -> None:
    queue = SqliteQueue(database, settings)
    stop = asyncio.Event()
    await asyncio.wait_for(queue.wait_for_work(600, stop), 30)  # the first call notes where the database is
    assert await queue.claim("w") == []
    waiting = asyncio.create_task(queue.wait_for_work(600, stop))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # nothing committed: still waiting
    await add_job(database)  # another connection commits
    await asyncio.wait_for(waiting, 30)  # far sooner than the 600 s poll interval

    waiting = asyncio.create_task(queue.wait_for_work(600, stop))
    await asyncio.sleep(0.05)
    stop.set()  # a stop ends the wait too
    await asyncio.wait_for(waiting, 30)
    await queue.close()


async def test_concurrent_writers_in_one_process_all_commit(database: Database, settings: Settings) -> None:
    # A burst like fifty members' /imagine at once: every transaction commits, none sees "database is locked".
    ids = await asyncio.gather(*(add_job(database, user_id=i) for i in range(50)))
    async with database.sessions() as session:
        stored = (await session.execute(select(Job.id))).scalars().all()
    assert sorted(stored) == sorted(ids)


async def test_a_transaction_opened_inside_another_fails_at_once_instead_of_waiting_on_itself(
    database: Database,
) -> None:
    async with database.transaction():
        with pytest.raises(RuntimeError, match="inside another"):
            async with database.transaction():
                pass
    async with database.transaction() as session:  # the lock was given back
        await session.execute(select(Job.id))


async def test_a_result_without_images_is_still_recorded(database: Database, settings: Settings) -> None:
    queue = SqliteQueue(database, settings)
    await add_job(database)
    [claimed] = await queue.claim("w")
    assert await queue.complete(claimed, JobResult(images=[], gpu_seconds=0.1, compute_units=0.0))
    job = await _job(database, claimed.id)
    assert job.status == JobStatus.SUCCEEDED and job.images == []
