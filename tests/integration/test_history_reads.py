"""Reads that run after every commit (the delivery pass) or for every tracked job every second (the
wait estimate) read the rows they want through a partial index, not the server's whole history."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, update

from bot.config import Settings
from bot.db.models import Job
from bot.services.delivery import DeliveryService
from bot.services.jobs import RECENT_COSTS
from engine.contract import JobStatus, utcnow
from engine.queue.database import Database
from tests.factories import add_job
from tests.integration.test_cli import atelier

HISTORY = 30


@contextmanager
def statements(database: Database) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the database's connections run, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)


def plan(settings: Settings, statement: str, parameters: Any) -> list[str]:
    with sqlite3.connect(settings.data_dir / "atelier.db") as connection:
        return [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]


async def _history(database: Database, *, delivered: int) -> list[str]:
    """That many results already posted, each with its compute time, oldest first."""
    ids = [await add_job(database, user_id=i, age_seconds=1000 - i) for i in range(delivered)]
    async with database.transaction() as session:
        for i, job_id in enumerate(ids):
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status=JobStatus.SUCCEEDED,
                    channel_id=5,
                    finished_at=Job.created_at,
                    delivered_at=Job.created_at,
                    message_id=1000 + i,
                    gpu_seconds=float(i),
                )
            )
    return ids


async def test_the_delivery_pass_reads_only_the_results_not_yet_posted(database: Database, settings: Settings) -> None:
    await _history(database, delivered=HISTORY)
    waiting = await add_job(database, user_id=99)
    queued = await add_job(database, user_id=98)
    async with database.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.id.in_([waiting, queued]))
            .values(channel_id=5, status=JobStatus.FAILED, finished_at=utcnow(), error="boom")
        )
        # Finished once and back in the queue (an operator's retry): waiting, not to be posted.
        await session.execute(update(Job).where(Job.id == queued).values(status=JobStatus.QUEUED))
    delivery = DeliveryService(database)
    assert [job.id for job in await delivery.pending()] == [waiting]
    with statements(database) as seen:
        claimed = await delivery.claim_ready()
    assert [job.id for job in claimed] == [waiting]
    assert await delivery.claim_ready() == []  # claimed once
    # The glance that finds it, then the claim's update: both through the partial index.
    finding = [(s, p) for s, p in seen if "jobs.delivered_at IS NULL" in s]
    assert len(finding) == 2, finding
    for statement, parameters in finding:
        steps = plan(settings, statement, parameters)
        assert any("ix_jobs_undelivered" in step for step in steps), steps
        assert not any(step.startswith("SCAN jobs") for step in steps), steps


async def test_the_wait_estimate_averages_the_last_jobs_from_an_index_alone(
    services: Any, database: Database, settings: Settings
) -> None:
    await _history(database, delivered=RECENT_COSTS + 20)
    queued = await add_job(database, user_id=99)
    with statements(services.db) as seen:
        progress = await services.jobs.progress(queued)
    # The newest RECENT_COSTS jobs cost 20 … RECENT_COSTS + 19 seconds each: their mean, not all jobs'.
    assert progress.eta_seconds == (RECENT_COSTS - 1) / 2 + 20
    statement, parameters = next((s, p) for s, p in seen if "avg(" in s)
    steps = plan(settings, statement, parameters)
    assert any("COVERING INDEX ix_jobs_costed" in step for step in steps), steps


def test_bench_history_times_each_read_against_its_plain_form(settings_env: dict[str, str]) -> None:
    result = atelier(settings_env, "bench", "history", "--past", "20,60", "--reads", "2", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert [row["past"] for row in rows] == [20, 60]
    for row in rows:
        for read in ("pending_ms", "plain_pending_ms", "estimate_ms", "plain_estimate_ms"):
            assert row[read] > 0, read


def test_bench_history_refuses_a_bad_size_in_one_line(settings_env: dict[str, str]) -> None:
    result = atelier(settings_env, "bench", "history", "--past", "100,0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --past: expected comma-separated whole numbers of at least 1, got '100,0'"
    ]
