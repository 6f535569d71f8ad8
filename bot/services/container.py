"""Builds the services once per process, from settings: the bot and the CLI share this."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import Settings
from bot.db.session import Database
from bot.services.admin import AdminService
from bot.services.jobs import Expander, JobService
from bot.services.quota import QuotaService
from bot.services.ratings import RatingService
from engine.queue import JobQueue, open_queue


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
    return ExpansionConfig(
        mode=settings.expansion_mode, model=model, quantization=quantization, tokenizer_dir=tokenizer_dir
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

    @classmethod
    def create(cls, settings: Settings, *, expander: Expander | None = None) -> Services:
        settings.ensure_dirs()
        db = Database(settings.db_url)
        queue = open_queue(settings, db)
        expander = expander or build_expander(settings)
        quota = QuotaService(settings.default_images_per_day)
        jobs = JobService(settings, db, queue, expander, quota)
        return cls(settings, db, queue, expander, quota, jobs, AdminService(db, quota), RatingService(db))

    async def close(self) -> None:
        close = getattr(self.expander, "aclose", None)
        if close is not None:
            await close()
        await self.queue.close()
        await self.db.dispose()
