"""SQLite lease-table semantics, against a real migrated database file."""

from __future__ import annotations

import asyncio
import sqlite3
import sys

import pytest
from sqlalchemy import select, update

from bot.config import Settings
from bot.db.models import Job
from engine.queue import database as database_module
from engine.queue.database import RESULT_NEWS, CommitWatch, Database
from engine.queue.sqlite import SqliteQueue
from tests.factories import add_job, queued_job


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


async def test_a_claim_with_nothing_due_never_waits_for_the_write_lock(database: Database, settings: Settings) -> None:
    # Engines look after every commit; when there is nothing for them, a result being recorded (or a
    # member's submit) must not queue behind their look.
    await add_job(database, model="another/model")  # queued, but not for this engine
    holder = sqlite3.connect(settings.data_dir / "atelier.db", timeout=0)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        claim = SqliteQueue(database, settings).claim("w", models=["atelier/tiny-sd"])
        assert await asyncio.wait_for(claim, 5) == []
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.parametrize("wake", ["file notices", "looks"])
async def test_an_idle_engine_wakes_for_a_new_job_before_its_poll_interval(
    database: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch, wake: str
) -> None:
    if wake == "file notices":
        if sys.platform != "linux":
            pytest.skip("inotify is Linux's")
        # Only the kernel's notice can end the wait in time: the watch's own looks are ten minutes apart.
        monkeypatch.setattr(database_module, "WATCH_SECONDS_WITH_NOTICES", 600.0)
    else:
        # No notices (as off Linux): the watch's frequent looks find the commit.
        monkeypatch.setattr(database_module.FileNotices, "of", classmethod(lambda cls, path, topic=None: None))
    queue = SqliteQueue(database, settings)
    stop = asyncio.Event()
    await asyncio.wait_for(queue.wait_for_work(600, stop), 30)  # the first call notes where the database is
    assert await queue.claim("w") == []
    waiting = asyncio.create_task(queue.wait_for_work(600, stop))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # nothing committed: still waiting
    job_id = await add_job(database)  # another connection commits a job
    await SqliteQueue(database, settings).publish(await queued_job(database, job_id))  # and publishes it
    await asyncio.wait_for(waiting, 30)  # far sooner than the 600 s poll interval

    waiting = asyncio.create_task(queue.wait_for_work(600, stop))
    await asyncio.sleep(0.05)
    stop.set()  # a stop ends the wait too
    await asyncio.wait_for(waiting, 30)
    await queue.close()


async def test_a_bots_watch_wakes_at_once_for_the_engines_news_not_for_every_commit(
    database: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sys.platform != "linux":
        pytest.skip("inotify is Linux's")
    # Looks ten minutes apart: only a nudge of the bot's own topic can end the wait in time.
    monkeypatch.setattr(database_module, "WATCH_SECONDS_WITH_NOTICES", 600.0)
    watch = CommitWatch(settings.db_url, topic=RESULT_NEWS)
    stop = asyncio.Event()
    assert await watch.wait(600, stop)  # the first call notes where the database is
    waiting = asyncio.create_task(watch.wait(600, stop))
    job_id = await add_job(database)
    await SqliteQueue(database, settings).publish(await queued_job(database, job_id))  # news for the engines
    await asyncio.sleep(0.1)
    assert not waiting.done()  # committed and nudged, but not for a bot
    assert await SqliteQueue(database, settings).cancel(job_id) == "cancelled"  # a member is to be told
    assert await asyncio.wait_for(waiting, 30)
    await watch.close()


async def test_a_commit_nobody_nudged_for_still_wakes_a_watch_at_its_next_look(
    database: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "WATCH_SECONDS_WITH_NOTICES", 0.05)
    watch = CommitWatch(settings.db_url, topic=RESULT_NEWS)
    stop = asyncio.Event()
    assert await watch.wait(600, stop)
    waiting = asyncio.create_task(watch.wait(600, stop))
    await add_job(database)  # written straight to the table: no nudge
    assert await asyncio.wait_for(waiting, 30)
    await watch.close()


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


async def test_a_reader_never_waits_for_a_writer_in_another_connection(database: Database, settings: Settings) -> None:
    """`atelier export` and /stats read while engines write: they read a snapshot, and never take (or
    wait for) the write lock, whose busy timeout is 30 s."""
    job_id = await add_job(database)
    writer = Database(settings.db_url)
    try:
        async with writer.transaction() as session:  # holds the write lock until the block ends
            await session.execute(update(Job).where(Job.id == job_id).values(error="being written"))
            async with asyncio.timeout(5):
                async with database.sessions() as reading:
                    row = await reading.get(Job, job_id)
            assert row is not None and row.error is None  # the last committed state
    finally:
        await writer.dispose()
