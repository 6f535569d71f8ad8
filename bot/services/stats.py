"""A server's numbers: images per day, its best-rated images, average rating by style and by model."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from bot.db.models import Image, Job, Rating
from engine.contract import JobKind, JobStatus, utcnow
from engine.queue.database import Database


async def guild_stats(database: Database, guild_id: int, *, days: int = 7, top: int = 3) -> dict[str, Any]:
    since = utcnow() - timedelta(days=days)
    day = func.date(Job.created_at)
    async with database.sessions() as session:
        per_day = (
            await session.execute(
                select(day, func.coalesce(func.sum(Job.count), 0))
                .where(
                    Job.guild_id == guild_id,
                    Job.status == JobStatus.SUCCEEDED,
                    Job.created_at >= since,
                    Job.kind != JobKind.EXPLAIN,  # a re-run to explain an image is not a new image
                )
                .group_by(day)
                .order_by(day)
            )
        ).all()
        best = (
            await session.execute(
                select(Job.id, Job.member_prompt, Image.message_id, func.avg(Rating.score), func.count(Rating.id))
                .join(Image, Image.id == Rating.image_id)
                .join(Job, Job.id == Rating.job_id)
                .where(Rating.guild_id == guild_id)
                .group_by(Image.id)
                .order_by(func.avg(Rating.score).desc(), func.count(Rating.id).desc())
                .limit(top)
            )
        ).all()

        async def average_by(column: Any) -> dict[str, float]:
            rows = await session.execute(
                select(column, func.avg(Rating.score))
                .join(Job, Job.id == Rating.job_id)
                .where(Rating.guild_id == guild_id)
                .group_by(column)
            )
            return {str(key or "none"): round(float(avg), 2) for key, avg in rows.all()}

        by_style = await average_by(Job.style)
        by_model = await average_by(Job.model)
    return {
        "images_per_day": {str(d): int(n) for d, n in per_day},
        "top_rated": [
            {"job_id": j, "prompt": p, "message_id": m, "average": round(float(a), 2), "ratings": int(c)}
            for j, p, m, a, c in best
        ],
        "average_by_style": by_style,
        "average_by_model": by_model,
    }
