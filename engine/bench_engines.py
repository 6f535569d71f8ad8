"""`atelier bench engine --engines 1,2,3`: throughput as engine processes are added to one queue.

For each count, that many real engine processes (`python -m engine`) start on one queue (the SQLite
lease table in a scratch database, or the Redis given by ATELIER_QUEUE_URL), a burst of jobs from
as many members arrives through a process standing in for the bot, and the burst's images per second
and per-job latencies (creation to recorded result) are reported. On a CPU-only host the engines share
its cores, so the figure shows what the queue costs rather than what more GPUs would give.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from engine.contract import utcnow
from engine.timing import percentile

START_TIMEOUT_SECONDS = 300.0
BURST_TIMEOUT_SECONDS = 900.0


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--engines: expected comma-separated whole numbers, got {text!r}") from None
    if not counts or any(count < 1 for count in counts):
        raise ValueError(f"--engines: each count must be at least 1, got {text!r}")
    return counts


def run_bench_engines(args: argparse.Namespace) -> int:
    from engine.config import TINY_MODEL, ConfigError, EngineSettings
    from engine.pipelines.registry import resolve_model

    try:
        counts = parse_counts(args.engines)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if args.arch:
        raise ConfigError("--engines runs the tiny model only (each engine is a CPU process here)")
    base = EngineSettings(**({"data_dir": Path(args.data_dir)} if args.data_dir else {}))
    base.ensure_dirs()
    resolve_model(TINY_MODEL, base.models_dir)  # built once, before any engine starts
    results = []
    with tempfile.TemporaryDirectory(prefix="atelier-bench-engines-") as scratch:
        for count in counts:
            results.append(asyncio.run(_measure(count, args.requests, Path(scratch) / f"engines-{count}", base)))
    report = {
        "requests": args.requests,
        "cpus": os.cpu_count(),
        "queue": "redis" if (base.queue_url or "").startswith(("redis://", "rediss://")) else "sqlite",
        "results": results,
    }
    if results:
        first = results[0]["images_per_s"] or 1e-9
        for row in results:
            row["speedup_vs_first"] = round(row["images_per_s"] / first, 3)
    if args.json:
        print(json.dumps(report))
    else:
        for row in report["results"]:
            print(f"{row['engines']} engine(s): {row['images_per_s']:.2f} images/s, p50 {row['p50_ms']:.0f} ms")
    return 0


async def _measure(count: int, requests: int, data_dir: Path, base: Any) -> dict[str, Any]:
    from sqlalchemy import func, select

    from engine.bench import BenchSpec, _Submitter
    from engine.config import TINY_MODEL, EngineSettings
    from engine.queue.database import CommitWatch, Database
    from engine.queue.ledger import jobs, workers
    from migrations import upgrade

    settings = EngineSettings(data_dir=data_dir, models_path=base.models_dir, queue_url=base.queue_url)
    settings.ensure_dirs()
    await upgrade(settings.db_url)
    engines = start_engine_processes(count, data_dir, base.models_dir)
    database = Database(settings.db_url)
    watch = CommitWatch(settings.db_url)
    stop = asyncio.Event()
    submitter = _Submitter(settings.db_url)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while (
            await _scalar(database, select(func.count()).select_from(workers).where(workers.c.stopped_at.is_(None)))
            < count
        ):
            if time.monotonic() > deadline or any(engine.poll() is not None for engine in engines):
                raise RuntimeError(f"{count} engine(s) did not all start")
            await watch.wait(1.0, stop)
        bench = BenchSpec(model=TINY_MODEL, arch="tiny", width=64, height=64, steps=2, guidance=0.0, requests=requests)
        ids = [uuid.uuid4().hex for _ in range(requests)]
        started = utcnow()
        submitter.send_burst(
            [(job_id, i + 1, spec.to_dict()) for i, (job_id, spec) in enumerate(zip(ids, bench.jobs(), strict=True))]
        )
        submitter.enqueue_times()
        done = jobs.c.status.in_(["succeeded", "failed", "cancelled"])
        deadline = time.monotonic() + BURST_TIMEOUT_SECONDS
        while (
            await _scalar(database, select(func.count()).select_from(jobs).where(jobs.c.id.in_(ids), done)) < requests
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the burst did not finish in time")
            await watch.wait(1.0, stop)
        async with database.sessions() as session:
            rows = (
                await session.execute(
                    select(jobs.c.created_at, jobs.c.finished_at, jobs.c.status).where(jobs.c.id.in_(ids))
                )
            ).all()
    finally:
        submitter.close()
        stop_engine_processes(engines)
        await watch.close()
        await database.dispose()
    seconds = max((max(row.finished_at for row in rows) - started).total_seconds(), 1e-6)
    latencies = [(row.finished_at - row.created_at).total_seconds() for row in rows]
    return {
        "engines": count,
        "images_per_s": round(requests / seconds, 3),
        "seconds": round(seconds, 3),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "failed": sum(row.status != "succeeded" for row in rows),
    }


_ROOT = str(Path(__file__).resolve().parent.parent)


def start_engine_processes(
    count: int, data_dir: Path, models_dir: Path, settings: dict[str, str] | None = None
) -> list[subprocess.Popen[bytes]]:
    """``count`` tiny engines (`python -m engine --tiny`) on the queue of ``data_dir``; ``settings``:
    more ATELIER_* variables for them."""
    env = {
        **os.environ,
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_MODELS_PATH": str(models_dir),
        "ATELIER_TINY": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])),
        **(settings or {}),
    }
    command = [sys.executable, "-m", "engine", "--tiny"]
    return [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)
    ]


def stop_engine_processes(engines: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, as an operator stops them: each finishes its batch and exits."""
    for engine in engines:
        engine.send_signal(signal.SIGTERM)
    for engine in engines:
        try:
            engine.wait(timeout=60)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()


async def _scalar(database: Any, query: Any) -> int:
    async with database.sessions() as session:
        return int((await session.execute(query)).scalar_one())
