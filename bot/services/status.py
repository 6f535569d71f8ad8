"""What an operator asks first: how deep is the queue, what runs, which engines are alive, what could
not be posted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from bot.db.models import Job
from bot.services.delivery import undeliverable
from engine.contract import JobStatus
from engine.queue import is_redis_url


async def queue_status(services: Any) -> dict[str, Any]:
    backend = "redis" if is_redis_url(services.settings.queue_url) else "sqlite"
    async with services.db.sessions() as session:
        undeliverable_count = (
            await session.execute(select(func.count()).select_from(Job).where(undeliverable()))
        ).scalar_one()
        waiting = dict(
            (
                await session.execute(
                    select(Job.model, func.count()).where(Job.status == JobStatus.QUEUED).group_by(Job.model)
                )
            ).all()
        )
    queue = await services.queue.status()
    served = {worker["model"] for worker in queue["workers"] if worker["alive"]}
    return {
        "backend": backend,
        **queue,
        "undeliverable": undeliverable_count,
        # Jobs that wait for a model no live engine serves: "no engine online for model X".
        "waiting_without_engine": {model: n for model, n in waiting.items() if model not in served},
    }
