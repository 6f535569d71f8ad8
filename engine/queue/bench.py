"""`atelier bench queue`: what a fair claim and an enqueue cost as the queue grows.

For each depth, a fresh queue (a migrated SQLite file in a temporary directory, or a prefix of its own
on Redis) is filled with that many jobs spread over ``members`` members, oldest first. Then, at that
depth:

- ``enqueue_per_s``: jobs enqueued one at a time, each its own transaction (SQLite) or publish (Redis),
  as the bot enqueues a member's request;
- ``claim_p50_ms`` / ``claim_p95_ms``: fair claims of ``claim`` jobs by one engine. Between two timed
  claims the oldest batch still running is completed and as many new jobs are enqueued (neither is
  timed), so the depth stays where it is and a few batches are always running, as with busy engines.
- SQLite only, ``rank_all_p50_ms`` / ``rank_all_p95_ms``: as many claims again on the same database,
  right after, with the plain fair pick that ranks every queued row (what the claim did before its
  lanes), so the ratio of the two is measured in one run. They come second because their reading of
  the whole table would otherwise leave the lanes' claims a colder cache.

Nothing here asserts a speed; the result is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from engine.contract import ClaimedJob, JobResult, JobSpec, JobStatus, QueuedJob, utcnow
from engine.queue.sqlite import SqliteQueue
from engine.timing import percentile

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from engine.contract import JobQueue

MODEL = "atelier/bench-model"
# Batches an engine keeps running while it claims the next: a few engines' worth.
RUNNING_BATCHES = 3
ENQUEUE_SAMPLES = 200
FILL_CHUNK = 2000
REDIS_START_SECONDS = 10.0


def add_bench_queue_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument(
        "--depth", default="1000,10000,100000", help="comma-separated queue depths (default 1000,10000,100000)"
    )
    parser.add_argument("--members", type=int, default=200, help="members the queued jobs belong to (default 200)")
    parser.add_argument("--claim", type=int, default=8, help="jobs per claim (default 8)")
    parser.add_argument("--claims", type=int, default=60, help="timed claims per depth (default 60)")
    parser.add_argument("--redis-url", help="an existing Redis (default: a redis-server of its own, started from PATH)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


@dataclass(frozen=True)
class QueueBench:
    backend: str
    depths: list[int]
    members: int
    claim: int
    claims: int


def parse_depths(text: str) -> list[int]:
    try:
        depths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--depth: expected comma-separated whole numbers, got {text!r}") from None
    if not depths or any(depth < 1 for depth in depths):
        raise ValueError(f"--depth: each depth must be at least 1, got {text!r}")
    return depths


def whole_numbers(text: str, *, flag: str, minimum: int) -> list[int]:
    """A benchmark's comma-separated sizes; ConfigError (one line, exit 2) unless each is at least ``minimum``."""
    from engine.config import ConfigError

    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < minimum:
        raise ConfigError(f"{flag}: expected comma-separated whole numbers of at least {minimum}, got {text!r}")
    return numbers


def run_bench_queue(args: argparse.Namespace) -> int:
    from engine.config import ConfigError

    try:
        depths = parse_depths(args.depth)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if args.members < 1 or args.claim < 1 or args.claims < 1:
        raise ConfigError("--members, --claim and --claims must be at least 1")
    bench = QueueBench(args.backend, depths, args.members, args.claim, args.claims)
    report = asyncio.run(measure(bench, redis_url=args.redis_url))
    if args.json:
        print(json.dumps(report))
    else:
        for row in report["results"]:
            print(
                f"depth {row['depth']:>7}: claim p50 {row['claim_p50_ms']:.2f} ms, p95 {row['claim_p95_ms']:.2f} ms,"
                f" enqueue {row['enqueue_per_s']:.0f}/s"
            )
    return 0


async def measure(bench: QueueBench, *, redis_url: str | None = None) -> dict[str, Any]:
    results = []
    with tempfile.TemporaryDirectory(prefix="atelier-bench-queue-") as scratch:
        if bench.backend == "redis":
            with _redis(redis_url, Path(scratch)) as url:
                for depth in bench.depths:
                    results.append(await _measure_redis(bench, depth, url, Path(scratch)))
        else:
            for depth in bench.depths:
                results.append(await _measure_sqlite(bench, depth, Path(scratch) / f"depth-{depth}"))
    return {
        "backend": bench.backend,
        "members": bench.members,
        "claim": bench.claim,
        "claims": bench.claims,
        "results": results,
    }


def _spec(index: int) -> JobSpec:
    return JobSpec(
        kind="txt2img",
        member_prompt=f"a fox in the snow, study {index}",
        model_prompt=f"a fox in the snow, study {index}",
        negative_prompt="",
        model=MODEL,
        width=64,
        height=64,
        steps=2,
        guidance=0.0,
        seed=index,
    )


class _Jobs:
    """The bench's stream of jobs: member i % members, each created a millisecond after the last."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.next = 0
        self.start = utcnow() - timedelta(days=1)

    def take(self, count: int) -> list[QueuedJob]:
        made = []
        for _ in range(count):
            i = self.next
            self.next += 1
            created = self.start + timedelta(milliseconds=i)
            made.append(QueuedJob(uuid.uuid4().hex, i % self.members + 1, _spec(i), 0, 3, created))
        return made


def _ms(seconds: list[float], q: float) -> float:
    return round(percentile(seconds, q) * 1000, 3)


def _summary(depth: int, timings: list[list[float]], enqueue_seconds: float, claimed: int) -> dict[str, Any]:
    summary = {
        "depth": depth,
        "claim_p50_ms": _ms(timings[0], 50),
        "claim_p95_ms": _ms(timings[0], 95),
        "enqueue_per_s": round(ENQUEUE_SAMPLES / enqueue_seconds, 1),
        "claimed_per_claim": round(claimed / max(1, sum(len(t) for t in timings)), 2),
    }
    if len(timings) > 1:
        summary |= {
            "rank_all_p50_ms": _ms(timings[1], 50),
            "rank_all_p95_ms": _ms(timings[1], 95),
            "speedup_p50": round(_ms(timings[1], 50) / max(_ms(timings[0], 50), 1e-3), 2),
        }
    return summary


async def _claims(
    bench: QueueBench, queue: JobQueue, jobs: _Jobs, enqueue: Any, settle: Any
) -> tuple[list[float], int]:
    """Timed claims: their timings, and the jobs they claimed."""
    timings: list[float] = []
    running: list[list[ClaimedJob]] = []
    claimed = 0
    for _ in range(bench.claims):
        started = time.perf_counter()
        batch = await queue.claim("bench-engine", limit=bench.claim, models=[MODEL])
        timings.append(time.perf_counter() - started)
        claimed += len(batch)
        running.append(batch)
        if len(running) > RUNNING_BATCHES:
            done = running.pop(0)
            await settle(done)
            await enqueue(jobs.take(len(done)))
    for batch in running:
        await settle(batch)
    return timings, claimed


# ---------------------------------------------------------------- SQLite


async def _measure_sqlite(bench: QueueBench, depth: int, data_dir: Path) -> dict[str, Any]:
    from sqlalchemy import insert, update

    from engine.config import EngineSettings
    from engine.queue.database import Database
    from engine.queue.ledger import jobs as jobs_table
    from migrations import upgrade

    settings = EngineSettings(data_dir=data_dir)
    settings.ensure_dirs()
    await upgrade(settings.db_url)
    database = Database(settings.db_url)
    queue = SqliteQueue(database, settings)
    plain = _RankAllQueue(database, settings)
    requests = _request_table()
    jobs = _Jobs(bench.members)

    async def insert_rows(batch: list[QueuedJob]) -> None:
        async with database.transaction() as session:
            await session.execute(insert(requests), [_row(job) for job in batch])

    async def settle(batch: list[ClaimedJob]) -> None:
        if batch:
            async with database.transaction() as session:
                await session.execute(
                    update(jobs_table)
                    .where(jobs_table.c.id.in_([job.id for job in batch]))
                    .values(status=JobStatus.SUCCEEDED, finished_at=utcnow(), lease_owner=None)
                )

    try:
        for start in range(0, depth, FILL_CHUNK):
            await insert_rows(jobs.take(min(FILL_CHUNK, depth - start)))
        await queue.claim("warm-up", limit=1, models=["no/such-model"])  # connect and plan before timing
        started = time.perf_counter()
        for job in jobs.take(ENQUEUE_SAMPLES):
            await insert_rows([job])
        enqueue_seconds = time.perf_counter() - started
        timings, claimed = await _claims(bench, queue, jobs, insert_rows, settle)
        await plain.claim("warm-up", limit=1, models=["no/such-model"])
        plain_timings, plain_claimed = await _claims(bench, plain, jobs, insert_rows, settle)
    finally:
        await queue.close()
    return _summary(depth, [timings, plain_timings], enqueue_seconds, claimed + plain_claimed)


# The fair pick as it was first written: a member's k-th due job gets turn (running + k), every queued
# row ranked by a window function. The same order as the lanes' pick, at a cost that grows with depth.
_RANK_ALL_SQL = """
WITH running AS (
    SELECT user_id, count(*) AS n FROM jobs WHERE status = 'running' GROUP BY user_id
)
SELECT j.id
FROM jobs j LEFT JOIN running r ON r.user_id = j.user_id
WHERE j.status = 'queued' AND j.available_at <= :now {model_filter}
ORDER BY coalesce(r.n, 0) + row_number() OVER (PARTITION BY j.user_id ORDER BY j.created_at, j.id),
         j.created_at, j.id
LIMIT :limit
"""


class _RankAllQueue(SqliteQueue):
    """The SQLite queue with the plain fair pick: the reference the lanes are measured against."""

    async def _pick(self, session: AsyncSession, params: dict[str, Any], models: list[str]) -> list[str]:
        names = ", ".join(f":model{i}" for i in range(len(models)))
        pick = _RANK_ALL_SQL.format(model_filter=f"AND j.model IN ({names})" if names else "")
        listed = {f"model{i}": model for i, model in enumerate(models)}
        return list((await session.execute(text(pick), params | listed)).scalars().all())


def _request_table() -> Any:
    """The jobs table as the bot writes a request: the queue's columns and the request's own."""
    from sqlalchemy import BigInteger, Float, String, column, table

    from engine.queue.ledger import jobs

    return table(
        "jobs",
        *(column(c.name, c.type) for c in jobs.c),
        column("guild_id", BigInteger),
        column("expansion_source", String),
        column("compute_units", Float),
    )


def _row(job: QueuedJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "guild_id": 1,
        "expansion_source": "raw",
        "compute_units": job.spec.compute_units,
        "user_id": job.user_id,
        **job.spec.to_dict(),
        "status": JobStatus.QUEUED,
        "attempts": 0,
        "max_attempts": job.max_attempts,
        "cancel_requested": False,
        "created_at": job.created_at,
        "available_at": job.created_at,
    }


# ---------------------------------------------------------------- sessions


def add_bench_sessions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds", type=int, default=400, help="timed operations of each kind per driver (default 400)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_bench_sessions(args: argparse.Namespace) -> int:
    from engine.config import ConfigError

    if args.rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    report = asyncio.run(measure_sessions(args.rounds))
    if args.json:
        print(json.dumps(report))
    else:
        for name, row in report["results"].items():
            print(
                f"{name:>6}: aiosqlite {row['aiosqlite_p50_ms']:.2f} ms ({row['aiosqlite_trips']} trips),"
                f" one trip {row['one_trip_p50_ms']:.2f} ms ({row['one_trip_trips']} trips), {row['speedup_p50']}x"
            )
    return 0


async def measure_sessions(rounds: int) -> dict[str, Any]:
    """The session the queue and the bot use most, through aiosqlite's own connection and through the
    one-trip connection (engine.queue.driver), on one migrated database, in alternating rounds so that
    both see the same machine: a one-row read, a one-row write, and an engine's claim of one job (its
    look, then the claim's transaction). Trips: calls sent to the connection's thread by one operation."""
    import aiosqlite
    from sqlalchemy import insert

    from engine.config import EngineSettings
    from engine.queue.database import Database
    from migrations import upgrade

    trips = 0
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await original(self, fn, *args, **kwargs)

    with tempfile.TemporaryDirectory() as tmp:
        settings = EngineSettings(data_dir=Path(tmp))
        settings.ensure_dirs()
        await upgrade(settings.db_url)
        drivers = {"aiosqlite": Database(settings.db_url, one_trip=False), "one_trip": Database(settings.db_url)}
        queues = {name: SqliteQueue(database, settings) for name, database in drivers.items()}
        jobs, requests = _Jobs(members=20), _request_table()
        async with drivers["one_trip"].transaction() as session:
            await session.execute(insert(requests), [_row(job) for job in jobs.take(1000)])
        probe = jobs.take(1)[0]
        async with drivers["one_trip"].transaction() as session:
            await session.execute(insert(requests), [_row(probe)])

        async def read(database: Database) -> None:
            async with database.sessions() as session:
                await session.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": probe.id})

        async def write(database: Database) -> None:
            async with database.transaction() as session:
                await session.execute(text("UPDATE jobs SET progress_step = 0 WHERE id = :id"), {"id": probe.id})

        operations = {
            "read": lambda name: read(drivers[name]),
            "write": lambda name: write(drivers[name]),
            "claim": lambda name: queues[name].claim("bench-engine", limit=1, models=[MODEL]),
        }
        timings: dict[tuple[str, str], list[float]] = {(op, name): [] for op in operations for name in drivers}
        counts: dict[tuple[str, str], int] = {}
        aiosqlite.Connection._execute = counted  # type: ignore[method-assign]
        try:
            for op, run in operations.items():
                for name in drivers:
                    await run(name)  # connect and plan before timing
                    trips = 0
                    await run(name)
                    counts[op, name] = trips
            for _ in range(rounds):
                for op, run in operations.items():
                    for name in drivers:
                        started = time.perf_counter()
                        await run(name)
                        timings[op, name].append(time.perf_counter() - started)
        finally:
            aiosqlite.Connection._execute = original  # type: ignore[method-assign]
            for queue in queues.values():
                await queue.close()
            for database in drivers.values():
                await database.dispose()
    results = {}
    for op in operations:
        plain, one_trip = _ms(timings[op, "aiosqlite"], 50), _ms(timings[op, "one_trip"], 50)
        results[op] = {
            "aiosqlite_p50_ms": plain,
            "one_trip_p50_ms": one_trip,
            "speedup_p50": round(plain / max(one_trip, 1e-3), 2),
            "aiosqlite_trips": counts[op, "aiosqlite"],
            "one_trip_trips": counts[op, "one_trip"],
        }
    return {"rounds": rounds, "results": results}


# ---------------------------------------------------------------- Redis


async def _measure_redis(bench: QueueBench, depth: int, url: str, scratch: Path) -> dict[str, Any]:
    from engine.config import EngineSettings
    from engine.queue.redis import RedisQueue

    settings = EngineSettings(data_dir=scratch / f"redis-{depth}")
    prefix = f"atelier-bench-{uuid.uuid4().hex[:8]}:"
    queue = RedisQueue(url, settings=settings, prefix=prefix)
    jobs = _Jobs(bench.members)

    async def publish_many(batch: list[QueuedJob]) -> None:
        await queue.publish_many(batch)

    async def settle(batch: list[ClaimedJob]) -> None:
        for job in batch:
            await queue.complete(job, JobResult(images=[], gpu_seconds=0.0))

    try:
        for start in range(0, depth, FILL_CHUNK):
            await publish_many(jobs.take(min(FILL_CHUNK, depth - start)))
        started = time.perf_counter()
        for job in jobs.take(ENQUEUE_SAMPLES):
            await queue.publish(job)
        enqueue_seconds = time.perf_counter() - started
        timings, claimed = await _claims(bench, queue, jobs, publish_many, settle)
    finally:
        await _drop_prefix(queue, prefix)
        await queue.close()
    return _summary(depth, [timings], enqueue_seconds, claimed)


async def _drop_prefix(queue: Any, prefix: str) -> None:
    keys = [key async for key in queue.redis.scan_iter(match=prefix + "*", count=1000)]
    for start in range(0, len(keys), 500):
        await queue.redis.delete(*keys[start : start + 500])


@contextlib.contextmanager
def _redis(url: str | None, scratch: Path) -> Iterator[str]:
    """The given Redis, or a redis-server of its own on a free loopback port, persisting nothing."""
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        from engine.config import ConfigError

        raise ConfigError("--backend redis needs --redis-url or a redis-server on PATH")
    with local_redis_server(binary, scratch) as started:
        yield started


@contextlib.contextmanager
def local_redis_server(binary: str, workdir: Path) -> Iterator[str]:
    """A redis-server on a free loopback port, persisting nothing, stopped when the block ends; its URL.
    Raises RuntimeError, with the end of its log, if it does not start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = workdir / "redis.log"
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--dir", str(workdir), "--logfile", str(log_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + REDIS_START_SECONDS
        while not _answers_ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                raise RuntimeError(f"redis-server did not start on port {port}:\n{log}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
