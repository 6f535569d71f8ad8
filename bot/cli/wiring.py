"""Wiring: settings, the database, the queue and the services, built once per process. The bot's
process and every command get their services from here and nowhere else."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.services.admin import AdminService
from bot.services.bandit import VariantBandit
from bot.services.edits import EditService
from bot.services.jobs import Expander, JobService
from bot.services.metrics import BotMetrics
from bot.services.quota import QuotaService
from bot.services.ratings import RatingService
from engine.contract import JobQueue
from engine.queue import open_queue
from engine.queue.database import Database


def build_expander(settings: Settings) -> Expander:
    from bot.services.expansion import ExpansionService

    return ExpansionService(expansion_config(settings))


def expansion_config(settings: Settings):  # type: ignore[no-untyped-def]
    from bot.services.expansion import ExpansionConfig

    model = settings.expansion_model
    quantization = settings.expansion_quantization
    if settings.tiny and settings.expansion_mode == "llm":
        from engine.tiny_llm import build_tiny_llm

        model = str(build_tiny_llm(settings.models_dir / "tiny-llm"))
        quantization = "none"
    tokenizer_dir = None
    if settings.tiny:
        from engine.tiny import write_clip_tokenizer

        tokenizer_dir = settings.models_dir / "tiny-clip-tokenizer"
        if not (tokenizer_dir / "tokenizer_config.json").is_file():
            write_clip_tokenizer(tokenizer_dir)
        tokenizer_dir = str(tokenizer_dir)
    translation_model = settings.translation_model
    if settings.tiny and settings.translation == "marian":
        from engine.tiny_marian import build_tiny_marian

        translation_model = str(build_tiny_marian(settings.models_dir / "tiny-marian"))
    return ExpansionConfig(
        mode=settings.expansion_mode,
        model=model,
        quantization=quantization,
        tokenizer_dir=tokenizer_dir,
        translation=settings.translation,
        translation_model=translation_model,
    )


@dataclass
class Services:
    settings: Settings
    db: Database
    queue: JobQueue
    expander: Expander
    quota: QuotaService
    jobs: JobService
    admin: AdminService
    ratings: RatingService
    metrics: BotMetrics
    bandit: VariantBandit
    edits: EditService

    @classmethod
    def create(cls, settings: Settings, *, expander: Expander | None = None) -> Services:
        settings.ensure_dirs()
        db = Database(settings.db_url)
        queue = open_queue(settings, db)
        expander = expander or build_expander(settings)
        quota = QuotaService(settings.default_images_per_day)
        metrics = BotMetrics()
        bandit = VariantBandit(db)
        jobs = JobService(settings, db, queue, expander, quota, metrics, bandit)
        return cls(
            settings,
            db,
            queue,
            expander,
            quota,
            jobs,
            AdminService(db, quota),
            RatingService(db),
            metrics,
            bandit,
            EditService(settings, db, jobs),
        )

    async def close(self) -> None:
        close = getattr(self.expander, "aclose", None)
        if close is not None:
            await close()
        await self.queue.close()
        await self.db.dispose()


# Commands that run for hours log what they do; one-shot commands print their answer and stay quiet.
LONG_RUNNING = ("bot", "engine")


def configure_logging_for(args: argparse.Namespace) -> None:
    from engine.logs import configure_logging

    settings = settings_from(args)
    if getattr(args, "verbose", False):
        level: str | None = "DEBUG"
    else:
        level = settings.log_level or ("INFO" if args.command in LONG_RUNNING else "WARNING")
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    configure_logging(level, settings.log_format, secrets=[token])


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment's settings with the command line's --tiny and --data-dir on top."""
    overrides: dict[str, Any] = {}
    if getattr(args, "tiny", False):
        overrides["tiny"] = True
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    return Settings(**overrides)


class NoExpansion:
    """Commands that never expand prompts: spare them loading a model."""

    async def expand(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("expansion is not available in this command")


async def with_services(
    args: argparse.Namespace, action: Callable[[Services], Awaitable[int]], *, expander: Expander | None = None
) -> int:
    """Build the services on a database at this Atelier's schema, run ``action`` with them, close them.
    Commands other than migrate, bot, engine and imagine never change the schema: on an older database
    they stop and say "run atelier migrate"."""
    from engine.queue import check_reachable
    from migrations import require_current

    settings = settings_from(args)
    settings.ensure_dirs()
    await check_reachable(settings)
    await require_current(settings.db_url)
    services = Services.create(settings, expander=expander or NoExpansion())
    try:
        return await action(services)
    finally:
        await services.close()


def print_json(value: Any, *, indent: int | None = None) -> None:
    print(json.dumps(value, ensure_ascii=False, default=str, indent=indent))
