"""`atelier imagine`: one job through the same queue, quotas and engine as /imagine."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from bot.cli.wiring import Services, print_json, settings_from
from bot.config import Settings
from bot.errors import AtelierError
from bot.services.records import JobRecord

log = logging.getLogger(__name__)


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("imagine", help="make one image locally through the queue and an engine")
    common(p)
    p.add_argument("prompt")
    p.add_argument("--seed", type=int)
    p.add_argument("--negative")
    p.add_argument("--size", help="WIDTHxHEIGHT")
    p.add_argument("--steps", type=int)
    p.add_argument("--style")
    p.add_argument("--raw", action="store_true", help="skip prompt expansion")
    p.add_argument("--count", type=int, default=1, help="images in this job (default 1)")
    p.add_argument(
        "--best-of",
        type=int,
        metavar="N",
        help="draw N candidates per image and keep the best-scored (all N are charged; 1-8)",
    )
    p.add_argument("--guild", type=int, default=0)
    p.add_argument("--user", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-wait", action="store_true", help="only enqueue; exit 3 if refused")
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=lambda args: asyncio.run(imagine(args)))


async def imagine(args: argparse.Namespace) -> int:
    from bot.services.jobs import ImagineRequest, parse_size
    from engine.queue import check_reachable
    from migrations import upgrade

    settings = settings_from(args)
    settings.ensure_dirs()
    await check_reachable(settings)
    await upgrade(settings.db_url)
    services = Services.create(settings)
    try:
        width, height = parse_size(args.size) if args.size else (None, None)
        request = ImagineRequest(
            prompt=args.prompt,
            guild_id=args.guild,
            user_id=args.user,
            negative=args.negative,
            seed=args.seed,
            width=width,
            height=height,
            steps=args.steps,
            style=args.style,
            raw=args.raw,
            count=args.count,
            best_of=args.best_of,
        )
        job = await services.jobs.submit(request)
        if args.no_wait:
            print_json({"job_id": job.id, "status": job.status}) if args.json else print(job.id)
            return 0
        job = await _run_to_end(services, job, args.timeout)
        if args.json:
            print_json(job.to_dict())
        else:
            print(job.images[0].path if job.images else f"{job.status}: {job.error}")
        return 0 if job.status == "succeeded" else 1
    finally:
        await services.close()


async def _run_to_end(services: Services, job: JobRecord, timeout: float) -> JobRecord:
    """Start an engine if none serves the model, pump Redis events into the ledger, wait for the end."""
    engine = None
    if await services.queue.live_workers(job.model) == 0:
        engine = spawn_engine(services.settings)
        log.info("started an engine (pid %d) for this job", engine.pid)
    pump = getattr(services.queue, "pump", None)
    stop_pumping = asyncio.Event()
    pumping = asyncio.create_task(pump(stop_pumping)) if pump is not None else None
    try:
        return await _wait_for(services, job.id, engine, timeout)
    finally:
        if pumping is not None:
            # Stopped between two events, not cancelled in the middle of writing one (engine.background).
            stop_pumping.set()
            await pumping


async def _wait_for(
    services: Services, job_id: str, engine: subprocess.Popen[bytes] | None, timeout: float
) -> JobRecord:
    deadline = time.monotonic() + timeout
    while True:
        job = await services.jobs.get(job_id)
        if job.terminal:
            return job
        if engine is not None and engine.poll() is not None:
            # Our engine died (a load error, say): the job is still queued for any other engine.
            raise AtelierError(
                f"the engine exited with code {engine.returncode}; see {services.settings.data_dir}/logs/engine.log"
            )
        if time.monotonic() > deadline:
            raise AtelierError(f"job {job_id} did not finish within {timeout:g}s")
        await asyncio.sleep(0.1)


# What an engine needs of this process's environment: where Python, the models and the GPU are, and
# Atelier's own settings, but not the bot's secrets.
_ENGINE_ENV_NAMES = {"PATH", "HOME", "USER", "LANG", "TMPDIR", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "CI"}
_ENGINE_ENV_PREFIXES = ("LC_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "CUDA_", "NVIDIA_", "TORCH", "OMP_", "MKL_")
_BOT_ONLY = {"ATELIER_DISCORD_TOKEN", "ATELIER_OWNER_IDS"}


def engine_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in environ.items()
        if name in _ENGINE_ENV_NAMES
        or name.startswith(_ENGINE_ENV_PREFIXES)
        or (name.startswith("ATELIER_") and name not in _BOT_ONLY)
    }


def spawn_engine(settings: Settings) -> subprocess.Popen[bytes]:
    """An engine of our own that exits once the queue has been idle a while."""
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "engine", "--idle-exit", str(settings.local_engine_idle_seconds)]
    if settings.tiny:
        command.append("--tiny")
    env = {**engine_environment(os.environ), "ATELIER_DATA_DIR": str(settings.data_dir)}
    with open(logs / "engine.log", "ab") as log_file:
        return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
