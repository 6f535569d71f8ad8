"""Ratings as JSONL preference data: one line per rated image with everything that made it.

Each line is the job as ``JobRecord.to_dict`` writes it everywhere else, with the rated image's own
path, index and seed and its ratings on top.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from bot.db.models import Job, Rating
from bot.services.records import JobRecord
from engine.queue.database import Database

log = logging.getLogger(__name__)


async def export_ratings(database: Database, out: Path, *, guild_id: int | None = None) -> int:
    query = select(Rating).order_by(Rating.image_id, Rating.id)
    if guild_id is not None:
        query = query.where(Rating.guild_id == guild_id)
    ratings: dict[int, list[dict[str, Any]]] = defaultdict(list)
    async with database.sessions() as session:
        rows = (await session.execute(query)).scalars().all()
        for rating in rows:
            ratings[rating.image_id].append(
                {
                    "user_id": rating.user_id,
                    "score": rating.score,
                    "emoji": rating.emoji,
                    "by_requester": rating.by_requester,
                }
            )
        job_ids = {rating.job_id for rating in rows}
        jobs = (
            await session.execute(select(Job).where(Job.id.in_(job_ids)).options(selectinload(Job.images)))
        ).scalars()
        records = [JobRecord.of(job) for job in jobs]
    lines = []
    for record in sorted(records, key=lambda r: r.created_at):
        job = record.to_dict()
        del job["images"], job["image"]  # the line is about one image: the rated one, below
        for image in record.images:
            if image.id in ratings:
                scores = [r["score"] for r in ratings[image.id]]
                lines.append(
                    {
                        **job,
                        "image": image.path,
                        "image_index": image.index,
                        "image_seed": image.seed,
                        "sha256": image.sha256,
                        "ratings": ratings[image.id],
                        "mean_score": sum(scores) / len(scores),
                    }
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
    return len(lines)
