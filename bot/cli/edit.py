"""`atelier edit` and `atelier describe`: a member's image through the same queue, quotas and engine
as /edit and /describe."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.cli.imagine import _run_to_end
from bot.cli.wiring import Services, print_json, settings_from
from bot.errors import InvalidRequest


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("edit", help="edit an image by instruction (or repair one named region)")
    common(p)
    p.add_argument("image", help="a PNG, JPEG or WebP file")
    p.add_argument("instruction", help='for example "make it winter" or "remove the car"')
    p.add_argument("--seed", type=int)
    p.add_argument("--strength", type=float, help="how much to change, 0–1 (default: the server's setting)")
    _member_options(p)
    p.set_defaults(func=lambda args: asyncio.run(edit(args)))

    p = sub.add_parser("describe", help="a caption of an image and four prompts from it")
    common(p)
    p.add_argument("image", help="a PNG, JPEG or WebP file")
    _member_options(p)
    p.set_defaults(func=lambda args: asyncio.run(describe(args)))


def _member_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guild", type=int, default=0)
    p.add_argument("--user", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=600.0)


def read_image(path_text: str) -> bytes:
    path = Path(path_text)
    if not path.is_file():
        raise InvalidRequest(f"{path_text}: no such file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidRequest(f"{path_text}: cannot be read ({error.strerror})") from None


async def _with_source(args: argparse.Namespace, action: Callable[[Services, Any], Any]) -> int:
    from bot.services.delivery import DEFAULT_UPLOAD_LIMIT
    from bot.services.edits import SourceImage
    from bot.services.uploads import save_source_image
    from engine.queue import check_reachable
    from migrations import upgrade

    settings = settings_from(args)
    data = read_image(args.image)
    settings.ensure_dirs()
    # Checked before anything else starts: a bad file costs nothing and leaves nothing behind.
    path, width, height = save_source_image(data, settings, byte_limit=DEFAULT_UPLOAD_LIMIT)
    await check_reachable(settings)
    await upgrade(settings.db_url)
    services = Services.create(settings)
    try:
        return await action(services, SourceImage(str(path), width, height))
    finally:
        await services.close()


async def edit(args: argparse.Namespace) -> int:
    from bot.services.edits import failure_text

    if not args.instruction.strip():
        raise InvalidRequest("The instruction is empty: say how to change the image.")

    async def run(services: Services, source: Any) -> int:
        job = await services.edits.submit_edit(
            args.instruction, source, strength=args.strength, seed=args.seed, guild_id=args.guild, user_id=args.user
        )
        job = await _run_to_end(services, job, args.timeout)
        plan = job.plan or {}
        result: dict[str, Any] = {
            "job_id": job.id,
            "instruction": job.member_prompt,
            "image": job.images[0].path if job.images else None,
            "mode": plan.get("mode"),
            "seed": job.seed,
            "status": job.status,
            "width": job.width,
            "height": job.height,
            "steps": job.steps,
            "strength": job.strength,
        }
        if plan.get("mode") == "repair":
            result["plan"] = {key: plan[key] for key in ("action", "target", "replacement", "source") if key in plan}
            result["mask"] = (job.outcome or {}).get("mask")
        if job.status != "succeeded":
            result["error"] = failure_text(job) or job.error
        if args.json:
            print_json(result)
        else:
            print(result["image"] if job.status == "succeeded" else f"{job.status}: {result['error']}")
        return 0 if job.status == "succeeded" else 1

    return await _with_source(args, run)


async def describe(args: argparse.Namespace) -> int:
    async def run(services: Services, source: Any) -> int:
        job = await services.edits.submit_describe(source, guild_id=args.guild, user_id=args.user)
        job = await _run_to_end(services, job, args.timeout)
        if job.status != "succeeded":
            if args.json:
                print_json({"job_id": job.id, "status": job.status, "error": job.error})
            else:
                print(f"{job.status}: {job.error}")
            return 1
        description = await services.edits.describe(job)
        if args.json:
            print_json(
                {
                    "job_id": job.id,
                    "status": job.status,
                    "caption": description.caption,
                    "prompts": description.prompts,
                }
            )
        else:
            print(description.caption)
            for number, prompt in enumerate(description.prompts, start=1):
                print(f"{number}. {prompt}")
        return 0

    return await _with_source(args, run)
