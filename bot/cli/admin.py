"""`atelier quota set|show`, `atelier export ratings`, `atelier status`: what an operator runs."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.cli.wiring import Services, print_json, with_services


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
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
    p.set_defaults(func=_runs(_quota))

    p = sub.add_parser("export", help="export data")
    common(p)
    export = p.add_subparsers(dest="export_command", required=True)
    q = export.add_parser("ratings", help="JSONL of rated images, usable as preference data")
    q.add_argument("--out", required=True)
    q.add_argument("--guild", type=int)
    p.set_defaults(func=_runs(_export))

    p = sub.add_parser("prune", help="remove old images and uploads that no rating or pending job needs")
    common(p)
    p.add_argument("--older-than", required=True, help="an age such as 30d, 12h or 90m")
    p.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_runs(_prune))

    p = sub.add_parser("status", help="queue depth, running jobs, engines alive")
    common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_runs(_status))


def _runs(action: Callable[[Services, argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    return lambda args: asyncio.run(with_services(args, lambda services: action(services, args)))


async def _quota(services: Services, args: argparse.Namespace) -> int:
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
    print_json(result, indent=None if args.json or args.quota_command == "set" else 2)
    return 0


async def _export(services: Services, args: argparse.Namespace) -> int:
    from bot.services.export import export_ratings

    count = await export_ratings(services.db, Path(args.out), guild_id=args.guild)
    print(f"wrote {count} rated image(s) to {args.out}", file=sys.stderr)
    return 0


async def _prune(services: Services, args: argparse.Namespace) -> int:
    from bot.services.prune import parse_age, prune

    report = await prune(
        services.db,
        services.settings.data_dir / "uploads",
        older_than=parse_age(args.older_than),
        dry_run=args.dry_run,
    )
    if args.json:
        print_json(report.to_dict())
    else:
        verb = "would free" if report.dry_run else "freed"
        print(f"{verb} {report.bytes / 2**20:.1f} MiB in {report.files} file(s)")
    return 0


async def _status(services: Services, args: argparse.Namespace) -> int:
    from bot.services.status import queue_status

    print_json(await queue_status(services), indent=None if args.json else 2)
    return 0
