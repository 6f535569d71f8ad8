"""Load benchmark: N members send /imagine at once through the local Discord simulator.

    python -m tests.bench_discord --members 500 --json

Prints ack latency p50/p99 (dispatch of INTERACTION_CREATE to the interaction callback) and how many
missed Discord's 3-second deadline. Every request is also enqueued for real (expansion, moderation,
quota reservation and the job row), so the figure includes the bot's whole front half. Then a tiny
engine, a process of its own as in a deployment (`python -m engine --tiny` on the same database),
draws every job and the bot delivers it while one webhook call in twenty is answered 429:
``lost`` counts jobs never delivered, ``invalid_requests`` the 401/403/429 answers the bot caused
itself (the injected 429s are reported apart).

    python -m tests.bench_discord --members 200 --deliver --json

adds a delivery phase with no injected faults: each member in turn sends /imagine and waits for the
image, one request in flight at a time, so no job waits behind another. ``deliver_overhead_p50_ms`` /
``_p95_ms`` are the time from the interaction's dispatch to the result's follow-up minus the engine's
compute time for that job (its ``gpu_seconds``): deferral, expansion, enqueue, the engine noticing the
job and gathering a batch (``batch_wait_ms``, the engine's setting), recording the result, the bot
noticing it, reading and uploading the image. ``deliver_stages_p50_ms`` takes it apart (see STAGES).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from engine.timing import percentile

DEADLINE = 3.0
# A delivery taken apart: interaction → job row written (defer, screening, expansion, quota), → claimed
# by the engine, → result recorded (less the compute), → follow-up posted.
STAGES = ("to_queued", "to_claimed", "engine_beyond_compute", "to_follow_up")


async def run(
    members: int, *, deliver_timeout: float = 1800, deliver: bool = False, batch_wait_ms: float | None = None
) -> dict[str, object]:
    from bot.app import AtelierBot
    from bot.cli.wiring import Services
    from bot.config import Settings
    from bot.db.models import Job
    from engine.bench_engines import start_engine_processes, stop_engine_processes
    from engine.config import TINY_MODEL
    from engine.pipelines.registry import resolve_model
    from engine.worker import DEFAULT_BATCH_WAIT_MS
    from migrations import upgrade
    from tests.simulator import DiscordSimulator

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), tiny=True, expansion_mode="presets", sync_commands=True)
        settings.ensure_dirs()
        await upgrade(settings.db_url)
        sim = DiscordSimulator()
        await sim.start()
        guild = sim.add_guild()
        people = [guild.add_member(f"member{i}") for i in range(members)]
        services = Services.create(settings)
        bot = AtelierBot(settings, services)
        sim.inject("POST", r"^/webhooks/", 429, retry_after=0.5, times=10**9, every=20)
        resolve_model(TINY_MODEL, settings.models_dir)  # built here once, before the engine starts
        window = DEFAULT_BATCH_WAIT_MS if batch_wait_ms is None else batch_wait_ms
        overheads: list[float] = []
        stages: dict[str, list[float]] = {}
        engines = []
        try:
            async with sim.connect(bot):
                started = time.perf_counter()
                interactions = await asyncio.gather(
                    *(p.slash("imagine", prompt=f"a fox number {i}") for i, p in enumerate(people))
                )
                await asyncio.gather(*(i.wait_ack(timeout=120) for i in interactions))
                acked = time.perf_counter() - started
                # Wait until every job is queued: the status edit follows the enqueue.
                await sim.wait_for(lambda: all(i.original and i.original.content for i in interactions), 300)
                queued = time.perf_counter() - started
                async with services.db.sessions() as session:
                    jobs = (await session.execute(select(func.count()).select_from(Job))).scalar_one()
                engines = start_engine_processes(
                    1, settings.data_dir, settings.models_dir, {"ATELIER_BATCH_WAIT_MS": str(window)}
                )
                lost = await _undelivered_after(services, deliver_timeout, engines)
                delivered = time.perf_counter() - started
                if deliver:
                    sim.clear_faults()
                    overheads, stages = await _deliver_one_at_a_time(people, services)
        finally:
            stop_engine_processes(engines)
            await services.close()
            await sim.stop()
    latencies = [i.ack_seconds for i in interactions if i.ack_seconds is not None]
    report: dict[str, object] = {
        "members": members,
        "cpus": os.cpu_count(),
        "ack_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "ack_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "ack_max_ms": round(max(latencies) * 1000, 1),
        "missed_deadline": sum(latency > DEADLINE for latency in latencies),
        "all_acked_s": round(acked, 2),
        "all_queued_s": round(queued, 2),
        "jobs_queued": jobs,
        "all_delivered_s": round(delivered, 2),
        "lost": lost,
        "invalid_requests": sim.invalid_requests - sim.injected,
        "injected_429": sim.injected,
    }
    if deliver:
        report |= {
            "deliver_overhead_p50_ms": round(percentile(overheads, 50) * 1000, 1),
            "deliver_overhead_p95_ms": round(percentile(overheads, 95) * 1000, 1),
            "deliver_overhead_max_ms": round(max(overheads) * 1000, 1),
            "delivered_one_at_a_time": len(overheads),
            "batch_wait_ms": window,
            "deliver_stages_p50_ms": {name: round(percentile(values, 50) * 1000, 1) for name, values in stages.items()},
        }
    return report


async def _deliver_one_at_a_time(people: list[Any], services: Any) -> tuple[list[float], dict[str, list[float]]]:
    """Each member in turn asks for one image and waits for it: the delivery overhead of each, and the
    stages it took apart, from the job's own timestamps (bot and engine share this machine's clock)."""
    from bot.db.models import Job

    overheads = []
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for i, person in enumerate(people):
        # The simulator's times are monotonic, the job's wall-clock UTC: the offset between the clocks is
        # taken again for each request, since the wall clock is slewed and drifted by up to 20 ms over a
        # run when it was taken once.
        wall_minus_monotonic = time.time() - time.monotonic()
        interaction = await person.slash("imagine", prompt=f"a lighthouse at dusk, study {i}")
        result = await interaction.wait_followup(lambda m: bool(m.attachments), timeout=120)
        posted = interaction.followup_times[interaction.followups.index(result)]
        async with services.db.sessions() as session:
            job = (
                await session.execute(
                    select(Job.created_at, Job.started_at, Job.finished_at, Job.gpu_seconds)
                    .where(Job.user_id == person.id)
                    .order_by(Job.created_at.desc())
                    .limit(1)
                )
            ).one()
        gpu_seconds = float(job.gpu_seconds or 0.0)
        overheads.append(posted - interaction.dispatched_at - gpu_seconds)

        def at(moment: datetime, offset: float = wall_minus_monotonic) -> float:
            return moment.replace(tzinfo=UTC).timestamp() - offset

        stages["to_queued"].append(at(job.created_at) - interaction.dispatched_at)
        stages["to_claimed"].append(at(job.started_at) - at(job.created_at))
        stages["engine_beyond_compute"].append(at(job.finished_at) - at(job.started_at) - gpu_seconds)
        stages["to_follow_up"].append(posted - at(job.finished_at))
    return overheads, stages


async def _undelivered_after(services: object, timeout: float, engines: list[Any]) -> int:
    """Jobs without a posted message once every job is delivered, or when ``timeout`` runs out."""
    from bot.db.models import Job

    deadline = time.monotonic() + timeout
    while True:
        if any(engine.poll() is not None for engine in engines):
            raise RuntimeError("the engine process exited")
        async with services.db.sessions() as session:  # type: ignore[attr-defined]
            waiting = (
                await session.execute(select(func.count()).select_from(Job).where(Job.message_id.is_(None)))
            ).scalar_one()
        if waiting == 0 or time.monotonic() > deadline:
            return int(waiting)
        await asyncio.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--deliver-timeout", type=float, default=1800, help="seconds to wait for every delivery")
    parser.add_argument(
        "--deliver", action="store_true", help="then measure the delivery overhead, one request at a time"
    )
    parser.add_argument("--batch-wait-ms", type=float, help="the engine's batch window (default: the engine's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(
        run(args.members, deliver_timeout=args.deliver_timeout, deliver=args.deliver, batch_wait_ms=args.batch_wait_ms)
    )
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
