"""Reactions on result messages become ratings: one per member per image, the latest wins."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.db.models import Guild, Image, Job, Rating
from engine.contract import utcnow
from engine.queue.database import Database

log = logging.getLogger(__name__)

# Scores from 1 (bad) to 5 (great). Servers can replace the map with `/atelier config`.
DEFAULT_EMOJI_SCORES: dict[str, int] = {
    "⭐": 5,
    "❤️": 5,
    "🔥": 5,
    "👍": 4,
    "😐": 3,
    "👎": 1,
    "1️⃣": 1,
    "2️⃣": 2,
    "3️⃣": 3,
    "4️⃣": 4,
    "5️⃣": 5,
}


def _normalise_emoji(emoji: str) -> str:
    # Clients send hearts and digits with or without the variation selector.
    return emoji.replace("\ufe0f", "")


@dataclass(frozen=True)
class RatingOutcome:
    job_id: str
    score: int
    by_requester: bool


class RatingService:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def _scores(self, session, guild_id: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
        guild = await session.get(Guild, guild_id)
        scores = guild.rating_emojis if guild is not None and guild.rating_emojis else DEFAULT_EMOJI_SCORES
        return {_normalise_emoji(k): v for k, v in scores.items()}

    async def _image_for_message(self, session, message_id: int) -> tuple[Image, Job] | None:  # type: ignore[no-untyped-def]
        # A grid is one message: its rating goes to the job's first image.
        query = (
            select(Image, Job)
            .join(Job, Job.id == Image.job_id)
            .where(Image.message_id == message_id)
            .order_by(Image.index)
            .limit(1)
        )
        row = (await session.execute(query)).first()
        return (row[0], row[1]) if row else None

    async def add(self, *, message_id: int, user_id: int, emoji: str, is_bot: bool) -> RatingOutcome | None:
        """Record a reaction; None when it is not a rating (a bot, another message, an unmapped emoji)."""
        if is_bot:
            return None
        async with self.db.transaction() as session:
            found = await self._image_for_message(session, message_id)
            if found is None:
                return None
            image, job = found
            score = (await self._scores(session, job.guild_id)).get(_normalise_emoji(emoji))
            if score is None:
                return None
            by_requester = job.user_id == user_id
            now = utcnow()
            statement = sqlite_insert(Rating).values(
                image_id=image.id,
                job_id=job.id,
                guild_id=job.guild_id,
                user_id=user_id,
                emoji=emoji,
                score=score,
                by_requester=by_requester,
                created_at=now,
                updated_at=now,
            )
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[Rating.image_id, Rating.user_id],
                    set_={"emoji": emoji, "score": score, "updated_at": now},
                )
            )
        return RatingOutcome(job.id, score, by_requester)

    async def remove(self, *, message_id: int, user_id: int, emoji: str) -> bool:
        """Removing the reaction that is the member's current rating removes the rating."""
        async with self.db.transaction() as session:
            found = await self._image_for_message(session, message_id)
            if found is None:
                return False
            image, _ = found
            result = await session.execute(
                delete(Rating)
                .where(Rating.image_id == image.id, Rating.user_id == user_id, Rating.emoji == emoji)
                .returning(Rating.id)
            )
            return result.scalar_one_or_none() is not None
