"""What an operator asks first: how deep is the queue, what runs, which engines are alive."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from bot.db.base import utcnow
from bot.db.models import Job, Worker


async def queue_status(services: Any) -> dict[str, Any]:
    backend_status = getattr(services.queue, "status", None)
    if backend_status is not None:
        # Redis: queue depth and workers live in Redis, not in this host's database.
        return {"backend": "redis", **(await backend_status())}
    now = utcnow()
    alive_after = now - timedelta(seconds=max(10.0, 3 * services.settings.heartbeat_seconds))
    async with services.db.sessions() as session:
        counts = dict((await session.execute(select(Job.status, func.count()).group_by(Job.status))).all())
        running = (
            await session.execute(
                select(Job.id, Job.lease_owner, Job.started_at, Job.model).where(Job.status == "running")
            )
        ).all()
        workers = (await session.execute(select(Worker).where(Worker.stopped_at.is_(None)))).scalars().all()
        oldest = (await session.execute(select(func.min(Job.created_at)).where(Job.status == "queued"))).scalar_one()
    return {
        "backend": "sqlite",
        "queue_depth": counts.get("queued", 0),
        "running": len(running),
        "jobs_by_status": counts,
        "oldest_queued_seconds": (now - oldest).total_seconds() if oldest else None,
        "running_jobs": [
            {
                "job_id": r.id,
                "worker": (r.lease_owner or "").rsplit(":", 1)[0],
                "started_at": r.started_at,
                "model": r.model,
            }
            for r in running
        ],
        "workers": [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "model": w.model,
                "heartbeat_at": w.heartbeat_at,
                "alive": w.heartbeat_at >= alive_after,
            }
            for w in workers
        ],
    }
