"""Builders for rows the tests need, written through the real models."""

from __future__ import annotations

import uuid
from datetime import timedelta

from bot.db.base import utcnow
from bot.db.models import Job, JobStatus, Usage
from bot.db.session import Database


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
) -> str:
    job_id = uuid.uuid4().hex
    created = utcnow() - timedelta(seconds=age_seconds)
    async with db.transaction() as session:
        session.add(
            Job(
                id=job_id,
                guild_id=guild_id,
                user_id=user_id,
                prompt=prompt,
                expanded_prompt=prompt,
                model=model,
                width=width,
                height=height,
                steps=steps,
                seed=seed,
                status=JobStatus.QUEUED,
                max_attempts=max_attempts,
                created_at=created,
                available_at=created,
            )
        )
        session.add(
            Usage(job_id=job_id, guild_id=guild_id, user_id=user_id, day=created.date(), images=1, compute_units=0.01)
        )
    return job_id
