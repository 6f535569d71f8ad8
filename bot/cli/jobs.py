"""`atelier jobs list|show|cancel|retry`."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from bot.cli.wiring import Services, print_json, with_services


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
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
    p.set_defaults(func=lambda args: asyncio.run(with_services(args, lambda services: _jobs(services, args))))


async def _jobs(services: Services, args: argparse.Namespace) -> int:
    if args.jobs_command == "list":
        jobs = await services.jobs.list_jobs(limit=args.limit, status=args.status, guild_id=args.guild)
        if args.json:
            print_json([job.to_dict() for job in jobs])
        else:
            for job in jobs:
                print(f"{job.id}  {job.status:<10} {job.created_at:%Y-%m-%d %H:%M}  {job.member_prompt[:60]}")
    elif args.jobs_command == "show":
        print_json((await services.jobs.get(args.job_id)).to_dict())
    elif args.jobs_command == "cancel":
        print_json({"job_id": args.job_id, "status": await services.jobs.cancel(args.job_id)})
    elif args.jobs_command == "retry":
        job = await services.jobs.retry(args.job_id)
        print_json({"job_id": job.id, "status": job.status, "delivery": job.delivery, "retry_of": args.job_id})
    return 0
