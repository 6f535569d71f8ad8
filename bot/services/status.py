"""What an operator asks first: how deep is the queue, what runs, which engines are alive, what could
not be posted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from bot.db.models import Job
from bot.services.records import MAX_DELIVERY_ATTEMPTS
from engine.contract import JobStatus
from engine.queue import is_redis_url


async def queue_status(services: Any) -> dict[str, Any]:
    backend = "redis" if is_redis_url(services.settings.queue_url) else "sqlite"
    async with services.db.sessions() as session:
        undeliverable = (
            await session.execute(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.message_id.is_(None),
                    Job.delivered_at.is_(None),
                    Job.delivery_attempts >= MAX_DELIVERY_ATTEMPTS,
                )
            )
        ).scalar_one()
        waiting = dict(
            (
                await session.execute(
                    select(Job.model, func.count()).where(Job.status == JobStatus.QUEUED).group_by(Job.model)
                )
            ).all()
        )
    without_engine = {model: n for model, n in waiting.items() if await services.queue.live_workers(model) == 0}
    return {
        "backend": backend,
        **(await services.queue.status()),
        "undeliverable": undeliverable,
        # Jobs that wait for a model no live engine serves: "no engine online for model X".
        "waiting_without_engine": without_engine,
    }
