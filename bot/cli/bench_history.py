"""`atelier bench history`: what the bot's frequent reads cost as a server's history grows.

For each size, a fresh migrated database gets that many results already posted (each with its
compute time) and one member's job waiting in the queue. Then, alternating, in one run:

- ``pending_ms``: the delivery pass's read (DeliveryService.pending), which runs after every commit,
  against ``plain_pending_ms``, the same read asking for ended jobs by status (as it did before its
  partial index): SQLite then reads every ended job the server ever had;
- ``estimate_ms``: the wait estimate's read of recent compute times (JobService.progress asks it for
  every tracked job every second), against ``plain_estimate_ms``, the mean over every succeeded job
  (as it was).

Nothing here asserts a speed; the result is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, text

from bot.config import Settings
from bot.db.models import Job
from bot.services.jobs import ImagineRequest, recent_compute_seconds
from bot.services.records import MAX_DELIVERY_ATTEMPTS
from engine.config import ConfigError
from engine.contract import JobStatus, utcnow
from engine.queue.bench import whole_numbers
from engine.timing import percentile


def add_bench_history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--past", default="1000,100000", help="comma-separated numbers of past jobs (default 1000,100000)"
    )
    parser.add_argument("--reads", type=int, default=50, help="timed reads of each kind per size (default 50)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_bench_history(args: argparse.Namespace) -> int:
    sizes = whole_numbers(args.past, flag="--past", minimum=1)
    if args.reads < 1:
        raise ConfigError("--reads must be at least 1")
    report = {"results": [asyncio.run(_measure(size, args.reads)) for size in sizes]}
    if args.json:
        print(json.dumps(report))
    else:
        for row in report["results"]:
            print(
                f"{row['past']:>7} past jobs: pending {row['pending_ms']:.2f} ms (plain {row['plain_pending_ms']:.2f}),"
                f" estimate {row['estimate_ms']:.2f} ms (plain {row['plain_estimate_ms']:.2f})"
            )
    return 0


async def _measure(past: int, reads: int) -> dict[str, Any]:
    from bot.cli.wiring import Services
    from bot.services.delivery import DeliveryService
    from migrations import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), tiny=True, expansion_mode="presets", default_images_per_day=10**9)
        settings.ensure_dirs()
        await upgrade(settings.db_url)
        services = Services.create(settings)
        try:
            waiting = await services.jobs.submit(
                ImagineRequest(prompt="a fox in the snow", guild_id=1, user_id=1, channel_id=5)
            )
            await _fill(services.db, waiting.id, past)
            delivery = DeliveryService(services.db)
            reads_of = {
                "pending": delivery.pending,
                "plain_pending": lambda: _plain_pending(services.db),
                "estimate": lambda: _estimate(services.db, plain=False),
                "plain_estimate": lambda: _estimate(services.db, plain=True),
            }
            timings: dict[str, list[float]] = {name: [] for name in reads_of}
            for read in reads_of.values():
                await read()  # plan and cache before timing
            for _ in range(reads):
                for name, read in reads_of.items():
                    started = time.perf_counter()
                    await read()
                    timings[name].append(time.perf_counter() - started)
        finally:
            await services.close()
    return {"past": past} | {f"{name}_ms": round(percentile(t, 50) * 1000, 3) for name, t in timings.items()}


async def _fill(database: Any, template_id: str, past: int) -> None:
    """``past`` copies of the template job, finished, posted and costed, in one statement."""
    async with database.transaction() as session:
        columns = [row[1] for row in (await session.execute(text("PRAGMA table_info(jobs)"))).all()]
        copied = ", ".join("('past' || n)" if name == "id" else name for name in columns)
        await session.execute(
            text(
                "WITH RECURSIVE numbers(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers WHERE n < :past)"
                f" INSERT INTO jobs ({', '.join(columns)}) SELECT {copied} FROM numbers, jobs WHERE jobs.id = :id"
            ),
            {"past": past, "id": template_id},
        )
        await session.execute(
            text(
                "UPDATE jobs SET status = 'succeeded', finished_at = created_at, delivered_at = created_at,"
                " message_id = 1, gpu_seconds = 0.5 WHERE id != :id"
            ),
            {"id": template_id},
        )


async def _plain_pending(database: Any) -> list[Any]:
    """The delivery pass's read as it was: ended jobs asked for by status, through the status index."""
    query = (
        select(Job)
        .where(
            Job.status.in_([JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]),
            Job.delivered_at.is_(None),
            Job.channel_id.is_not(None),
            Job.delivery_attempts < MAX_DELIVERY_ATTEMPTS,
            or_(Job.next_delivery_at.is_(None), Job.next_delivery_at <= utcnow()),
        )
        .order_by(Job.finished_at)
        .limit(20)
    )
    async with database.sessions() as session:
        return list((await session.execute(query)).scalars().all())


async def _estimate(database: Any, *, plain: bool) -> float | None:
    # Plain: the estimate as it was, the mean over every succeeded job.
    everything = select(func.avg(Job.gpu_seconds)).where(
        Job.status == JobStatus.SUCCEEDED, Job.gpu_seconds.is_not(None)
    )
    query = everything if plain else recent_compute_seconds()
    async with database.sessions() as session:
        return (await session.execute(query)).scalar_one()
