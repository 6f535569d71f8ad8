"""`atelier`: one command for the bot, the engine, migrations, local jobs and operations."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import AtelierError, InvalidRequest, Refused

log = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_REFUSED = 3


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "tiny", False):
        overrides["tiny"] = True
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    return Settings(**overrides)


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, default=str))


def job_to_dict(job: Any) -> dict[str, Any]:
    images = [image.path for image in job.images]
    return {
        "job_id": job.id,
        "status": job.status,
        "prompt": job.prompt,
        "expanded_prompt": job.expanded_prompt,
        "negative_prompt": job.negative_prompt,
        "expansion_source": job.expansion_source,
        "style": job.style,
        "seed": job.seed,
        "width": job.width,
        "height": job.height,
        "steps": job.steps,
        "guidance": job.guidance,
        "count": job.count,
        "model": job.model,
        "kind": job.kind,
        "guild_id": job.guild_id,
        "user_id": job.user_id,
        "image": images[0] if images else None,
        "images": images,
        "attempts": job.attempts,
        "error": job.error,
        "compute_units": job.compute_units,
        "gpu_seconds": job.gpu_seconds,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


# ---------------------------------------------------------------- migrate


def cmd_migrate(args: argparse.Namespace) -> int:
    from bot.db.migrate import upgrade_sync

    settings = _settings(args)
    settings.ensure_dirs()
    upgrade_sync(settings.db_url, args.revision)
    print(f"database at {settings.db_url} is at {args.revision}")
    return 0


# ---------------------------------------------------------------- engine


def cmd_engine(args: argparse.Namespace) -> int:
    from engine.serve import serve

    settings = _settings(args)
    return asyncio.run(serve(settings, max_batch=args.max_batch, idle_exit_seconds=args.idle_exit))


def spawn_engine(settings: Settings, *, idle_exit: float = 30.0) -> subprocess.Popen[bytes]:
    """An engine of our own that exits once the queue has been idle a while."""
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "engine", "--idle-exit", str(idle_exit)]
    if settings.tiny:
        command.append("--tiny")
    env = {**os.environ, "ATELIER_DATA_DIR": str(settings.data_dir)}
    with open(logs / "engine.log", "ab") as log_file:
        return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)


# ---------------------------------------------------------------- imagine


async def _imagine(args: argparse.Namespace) -> int:
    from bot.db.migrate import upgrade
    from bot.services.container import Services
    from bot.services.jobs import ImagineRequest, parse_size

    settings = _settings(args)
    await upgrade(settings.db_url)
    services = Services.create(settings)
    try:
        width = height = None
        if args.size:
            width, height = parse_size(args.size)
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
        )
        try:
            job = await services.jobs.submit(request)
        except InvalidRequest as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_INVALID
        except Refused as error:
            print(f"refused: {error}", file=sys.stderr)
            return EXIT_REFUSED
        if args.no_wait:
            _print_json({"job_id": job.id, "status": job.status}) if args.json else print(job.id)
            return 0
        engine = None
        if await services.queue.live_workers(job.model) == 0:
            engine = spawn_engine(settings)
            log.info("started an engine (pid %d) for this job", engine.pid)
        pump = getattr(services.queue, "pump", None)
        stop_pumping = asyncio.Event()
        pumping = asyncio.create_task(pump(stop_pumping)) if pump is not None else None
        try:
            job = await _wait_for(services, job.id, engine, args.timeout)
        except TimeoutError:
            print(f"error: job {job.id} did not finish within {args.timeout:g}s", file=sys.stderr)
            return EXIT_FAILED
        finally:
            if pumping is not None:
                # Stopped between two events, not cancelled in the middle of writing one (bot.background).
                stop_pumping.set()
                await pumping
        if args.json:
            _print_json(job_to_dict(job))
        else:
            print(job.images[0].path if job.images else f"{job.status}: {job.error}")
        return 0 if job.status == "succeeded" else EXIT_FAILED
    finally:
        await services.close()


async def _wait_for(services: Any, job_id: str, engine: subprocess.Popen[bytes] | None, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = await services.jobs.get(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        if engine is not None and engine.poll() is not None:
            # Our engine died (a load error, say): the job is still queued for any other engine.
            raise AtelierError(
                f"the engine exited with code {engine.returncode}; see {services.settings.data_dir}/logs/engine.log"
            )
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.1)


def cmd_imagine(args: argparse.Namespace) -> int:
    return asyncio.run(_imagine(args))


# ---------------------------------------------------------------- jobs


async def _jobs(args: argparse.Namespace) -> int:
    from bot.db.migrate import upgrade
    from bot.services.container import Services

    settings = _settings(args)
    await upgrade(settings.db_url)
    services = Services.create(settings, expander=_NoExpansion())
    try:
        if args.jobs_command == "list":
            jobs = await services.jobs.list_jobs(limit=args.limit, status=args.status, guild_id=args.guild)
            if args.json:
                _print_json([job_to_dict(job) for job in jobs])
            else:
                for job in jobs:
                    print(f"{job.id}  {job.status:<10} {job.created_at:%Y-%m-%d %H:%M}  {job.prompt[:60]}")
        elif args.jobs_command == "show":
            _print_json(job_to_dict(await services.jobs.get(args.job_id)))
        elif args.jobs_command == "cancel":
            status = await services.jobs.cancel(args.job_id)
            _print_json({"job_id": args.job_id, "status": status})
        elif args.jobs_command == "retry":
            job = await services.jobs.retry(args.job_id)
            _print_json({"job_id": job.id, "status": job.status, "retry_of": args.job_id})
        return 0
    finally:
        await services.close()


class _NoExpansion:
    """Job queries never expand prompts: spare them loading a model."""

    async def expand(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("expansion is not available in this command")


def cmd_jobs(args: argparse.Namespace) -> int:
    return asyncio.run(_jobs(args))


# ---------------------------------------------------------------- quota, export, status


async def _with_services(args: argparse.Namespace, action) -> int:  # type: ignore[no-untyped-def]
    from bot.db.migrate import upgrade
    from bot.services.container import Services

    settings = _settings(args)
    await upgrade(settings.db_url)
    services = Services.create(settings, expander=_NoExpansion())
    try:
        return await action(services)
    finally:
        await services.close()


def cmd_quota(args: argparse.Namespace) -> int:
    async def action(services: Any) -> int:
        if args.quota_command == "set":
            result = await services.admin.set_quota(
                guild_id=args.guild,
                actor_id=0,
                user_id=args.user,
                role_id=args.role,
                images_per_day=args.images_per_day,
                compute_per_day=args.compute_per_day,
                max_concurrent=args.max_concurrent,
                cooldown_seconds=args.cooldown,
            )
        else:
            roles = tuple(args.role or ())
            result = await services.admin.show_quota(guild_id=args.guild, user_id=args.user, role_ids=roles)
        _print_json(result) if args.json or args.quota_command == "set" else print(json.dumps(result, indent=2))
        return 0

    try:
        return asyncio.run(_with_services(args, action))
    except InvalidRequest as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID


def cmd_export(args: argparse.Namespace) -> int:
    from bot.services.export import export_ratings

    async def action(services: Any) -> int:
        count = await export_ratings(services.db, Path(args.out), guild_id=args.guild)
        print(f"wrote {count} rated image(s) to {args.out}", file=sys.stderr)
        return 0

    return asyncio.run(_with_services(args, action))


def cmd_status(args: argparse.Namespace) -> int:
    from bot.services.status import queue_status

    async def action(services: Any) -> int:
        status = await queue_status(services)
        if args.json:
            _print_json(status)
        else:
            print(json.dumps(status, indent=2, default=str))
        return 0

    return asyncio.run(_with_services(args, action))


# ---------------------------------------------------------------- bot


def cmd_bot(args: argparse.Namespace) -> int:
    from bot.app import run_bot

    settings = _settings(args)
    if args.sync:
        settings.sync_commands = True
    return run_bot(settings)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tiny", action="store_true", help="use the offline tiny models (no downloads)")
        p.add_argument("--data-dir", help="overrides ATELIER_DATA_DIR")

    p = sub.add_parser("migrate", help="upgrade the database to the latest schema")
    common(p)
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("engine", help="run a GPU engine worker")
    common(p)
    p.add_argument("--max-batch", type=int, help="jobs run as one pipeline call at most (ATELIER_MAX_BATCH)")
    p.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    p.set_defaults(func=cmd_engine)

    p = sub.add_parser("bot", help="run the Discord bot")
    common(p)
    p.add_argument("--sync", action="store_true", help="sync slash commands with Discord at start")
    p.set_defaults(func=cmd_bot)

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
    p.add_argument("--guild", type=int, default=0)
    p.add_argument("--user", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-wait", action="store_true", help="only enqueue; exit 3 if refused")
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=cmd_imagine)

    p = sub.add_parser("jobs", help="list, show, cancel or retry jobs")
    common(p)
    jobs = p.add_subparsers(dest="jobs_command", required=True)
    q = jobs.add_parser("list")
    q.add_argument("--json", action="store_true")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--status")
    q.add_argument("--guild", type=int)
    for name in ("show", "cancel", "retry"):
        q = jobs.add_parser(name)
        q.add_argument("job_id")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("quota", help="set or show daily budgets")
    common(p)
    quota = p.add_subparsers(dest="quota_command", required=True)
    q = quota.add_parser("set", help="server default, or --user / --role override; -1 = unlimited")
    q.add_argument("--guild", type=int, required=True)
    target = q.add_mutually_exclusive_group()
    target.add_argument("--user", type=int)
    target.add_argument("--role", type=int)
    q.add_argument("--images-per-day", type=int)
    q.add_argument("--compute-per-day", type=float)
    q.add_argument("--max-concurrent", type=int)
    q.add_argument("--cooldown", type=float, help="seconds between two requests")
    q.add_argument("--json", action="store_true")
    q = quota.add_parser("show")
    q.add_argument("--guild", type=int, required=True)
    q.add_argument("--user", type=int, required=True)
    q.add_argument("--role", type=int, action="append", help="the member's roles (repeatable)")
    q.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quota)

    p = sub.add_parser("export", help="export data")
    common(p)
    export = p.add_subparsers(dest="export_command", required=True)
    q = export.add_parser("ratings", help="JSONL of rated images, usable as preference data")
    q.add_argument("--out", required=True)
    q.add_argument("--guild", type=int)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("status", help="queue depth, running jobs, engines alive")
    common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    _add_feature_commands(sub, common)
    return parser


def _add_feature_commands(sub: Any, common: Any) -> None:
    """Commands whose code lives with the feature it drives."""
    from bot.services.expansion.cli import (
        add_bench_expand_arguments,
        add_expand_arguments,
        run_bench_expand,
        run_expand,
    )

    p = sub.add_parser("expand", help="expand a prompt as /imagine would")
    common(p)
    add_expand_arguments(p)
    p.set_defaults(func=run_expand)

    bench = sub.add_parser("bench", help="benchmarks that print JSON").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("expand", help="expansion LLM latency and tokens/s")
    common(p)
    add_bench_expand_arguments(p)
    p.set_defaults(func=run_bench_expand)

    from engine.bench import add_bench_engine_arguments, run_bench_engine

    p = bench.add_parser("engine", help="batched engine against plain sequential diffusers calls")
    common(p)
    add_bench_engine_arguments(p)
    p.set_defaults(func=run_bench_engine)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiosqlite", "alembic.runtime.migration", "httpx", "discord.gateway"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except AtelierError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
