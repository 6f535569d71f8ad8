"""Builders for rows the tests need, written through the real models."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from bot.db.models import Job, Usage
from engine.contract import JobStatus, QueuedJob, utcnow
from engine.queue import ledger
from engine.queue.database import Database


async def add_job(
    db: Database,
    *,
    user_id: int = 1,
    guild_id: int = 1,
    prompt: str = "a fox in the snow",
    age_seconds: float = 0.0,
    width: int = 64,
    height: int = 64,
    steps: int = 2,
    seed: int = 7,
    max_attempts: int = 3,
    model: str = "atelier/tiny-sd",
    kind: str = "txt2img",
    plan: dict[str, Any] | None = None,
) -> str:
    job_id = uuid.uuid4().hex
    created = utcnow() - timedelta(seconds=age_seconds)
    async with db.transaction() as session:
        session.add(
            Job(
                id=job_id,
                guild_id=guild_id,
                user_id=user_id,
                member_prompt=prompt,
                model_prompt=prompt,
                model=model,
                width=width,
                height=height,
                steps=steps,
                seed=seed,
                status=JobStatus.QUEUED,
                max_attempts=max_attempts,
                kind=kind,
                plan=plan,
                created_at=created,
                available_at=created,
            )
        )
        session.add(
            Usage(job_id=job_id, guild_id=guild_id, user_id=user_id, day=created.date(), images=1, compute_units=0.01)
        )
    return job_id


async def queued_job(db: Database, job_id: str) -> QueuedJob:
    """What the bot hands a queue backend to publish for a committed row."""
    async with db.sessions() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return ledger.queued_of(job)


def tiny_png(width: int = 64, height: int = 64, colour: str = "blue") -> bytes:
    """A real PNG of one colour, as an engine would return it."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()
