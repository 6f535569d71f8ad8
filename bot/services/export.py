"""Ratings as JSONL preference data: one line per rated image with everything that made it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy import select

from bot.db.models import Image, Job, Rating
from bot.db.session import Database

log = logging.getLogger(__name__)


async def export_ratings(database: Database, out: Path, *, guild_id: int | None = None) -> int:
    query = select(Rating, Image, Job).join(Image, Image.id == Rating.image_id).join(Job, Job.id == Rating.job_id)
    if guild_id is not None:
        query = query.where(Rating.guild_id == guild_id)
    query = query.order_by(Image.id, Rating.id)
    records: dict[int, dict[str, object]] = {}
    async with database.sessions() as session:
        for rating, image, job in (await session.execute(query)).all():
            record = records.setdefault(
                image.id,
                {
                    "job_id": job.id,
                    "image": image.path,
                    "image_index": image.index,
                    "sha256": image.sha256,
                    "prompt": job.prompt,
                    "expanded_prompt": job.expanded_prompt,
                    "negative_prompt": job.negative_prompt,
                    "expansion_source": job.expansion_source,
                    "parameters": {
                        "model": job.model,
                        "style": job.style,
                        "seed": job.seed + image.index,
                        "width": job.width,
                        "height": job.height,
                        "steps": job.steps,
                        "guidance": job.guidance,
                        "kind": job.kind,
                    },
                    "ratings": [],
                },
            )
            record["ratings"].append(  # type: ignore[union-attr]
                {
                    "user_id": rating.user_id,
                    "score": rating.score,
                    "emoji": rating.emoji,
                    "by_requester": rating.by_requester,
                }
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for record in records.values():
            scores = [r["score"] for r in record["ratings"]]  # type: ignore[index, union-attr]
            record["mean_score"] = sum(scores) / len(scores)
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records)
