"""Reactions as ratings, and their export as preference data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import select, update

from bot.db.models import Image, Job, Rating
from bot.services.delivery import DeliveryService
from bot.services.export import export_ratings
from bot.services.ratings import RatingService
from bot.services.records import JobRecord
from engine.contract import JobStatus, utcnow
from engine.queue.database import Database
from tests.factories import add_job

MESSAGE = 555
REQUESTER = 1


async def _delivered_job(database: Database) -> str:
    job_id = await add_job(database, user_id=REQUESTER)
    async with database.transaction() as session:
        session.add(
            Image(job_id=job_id, index=0, path="/tmp/x.png", width=64, height=64, size_bytes=1, sha256="0" * 64)
        )
    await DeliveryService(database).delivered(job_id, MESSAGE)
    return job_id


async def _ratings(database: Database) -> list[Rating]:
    async with database.sessions() as session:
        return list((await session.execute(select(Rating).order_by(Rating.user_id))).scalars().all())


async def test_one_rating_per_member_and_the_latest_wins(database: Database) -> None:
    await _delivered_job(database)
    ratings = RatingService(database)
    assert (await ratings.add(message_id=MESSAGE, user_id=2, emoji="👎", is_bot=False)).score == 1  # type: ignore[union-attr]
    assert (await ratings.add(message_id=MESSAGE, user_id=2, emoji="⭐", is_bot=False)).score == 5  # type: ignore[union-attr]
    [only] = await _ratings(database)
    assert (only.user_id, only.score, only.emoji) == (2, 5, "⭐")


async def test_removing_the_current_reaction_removes_the_rating(database: Database) -> None:
    await _delivered_job(database)
    ratings = RatingService(database)
    await ratings.add(message_id=MESSAGE, user_id=2, emoji="👍", is_bot=False)
    assert not await ratings.remove(message_id=MESSAGE, user_id=2, emoji="👎")  # not the current one
    assert await ratings.remove(message_id=MESSAGE, user_id=2, emoji="👍")
    assert await _ratings(database) == []


async def test_bots_other_messages_and_unmapped_emoji_are_ignored(database: Database) -> None:
    await _delivered_job(database)
    ratings = RatingService(database)
    assert await ratings.add(message_id=MESSAGE, user_id=3, emoji="⭐", is_bot=True) is None
    assert await ratings.add(message_id=999, user_id=3, emoji="⭐", is_bot=False) is None
    assert await ratings.add(message_id=MESSAGE, user_id=3, emoji="🦊", is_bot=False) is None
    assert await _ratings(database) == []


async def test_requester_rating_is_kept_and_marked(database: Database) -> None:
    await _delivered_job(database)
    outcome = await RatingService(database).add(message_id=MESSAGE, user_id=REQUESTER, emoji="❤", is_bot=False)
    assert outcome is not None and outcome.by_requester and outcome.score == 5


async def test_export_writes_one_line_per_rated_image(database: Database, tmp_path: Path) -> None:
    job_id = await _delivered_job(database)
    ratings = RatingService(database)
    await ratings.add(message_id=MESSAGE, user_id=2, emoji="⭐", is_bot=False)
    await ratings.add(message_id=MESSAGE, user_id=3, emoji="👎", is_bot=False)
    out = tmp_path / "ratings.jsonl"
    assert await export_ratings(database, out) == 1
    [line] = out.read_text().splitlines()
    record = json.loads(line)
    assert record["job_id"] == job_id and record["member_prompt"] == "a fox in the snow"
    assert (record["image_seed"], record["image"], record["steps"]) == (7, "/tmp/x.png", 2)
    assert sorted(r["score"] for r in record["ratings"]) == [1, 5] and record["mean_score"] == 3


async def test_the_export_gives_each_image_of_a_grid_the_seed_the_engine_drew_it_with(
    database: Database, tmp_path: Path
) -> None:
    last_seed = 2**32 - 1  # the second image's seed wraps to 0, as in the engine
    job_id = await add_job(database, seed=last_seed)
    async with database.transaction() as session:
        images = [
            Image(job_id=job_id, index=i, path=f"/tmp/{i}.png", width=64, height=64, size_bytes=1, sha256="0" * 64)
            for i in range(2)
        ]
        session.add_all(images)
        await session.flush()
        session.add_all(
            Rating(image_id=image.id, job_id=job_id, guild_id=1, user_id=2, emoji="⭐", score=5) for image in images
        )
    out = tmp_path / "ratings.jsonl"
    assert await export_ratings(database, out) == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["image_index"], line["image_seed"]) for line in lines] == [(0, last_seed), (1, 0)]


async def test_bots_claiming_what_is_ready_at_once_each_get_a_share_and_none_twice(database: Database) -> None:
    ids = [await add_job(database, user_id=i) for i in range(12)]
    async with database.transaction() as session:
        await session.execute(
            update(Job).where(Job.id.in_(ids)).values(status=JobStatus.SUCCEEDED, channel_id=5, finished_at=utcnow())
        )
    bots = [DeliveryService(Database(database.url)) for _ in range(3)]
    try:
        shares = await asyncio.gather(*(bot.claim_ready(limit=5) for bot in bots for _ in range(2)))
    finally:
        for bot in bots:
            await bot.db.dispose()
    claimed = [job.id for share in shares for job in share]
    assert sorted(claimed) == sorted(ids)  # every result claimed, none twice


async def test_a_claimed_result_carries_the_same_record_as_the_job_read_alone(database: Database) -> None:
    """The claim reads rows, not ORM objects: every field, the JSON ones and the images in index order
    among them, must come out as the ORM gives them."""
    job_id = await add_job(database)
    async with database.transaction() as session:
        for index in (2, 0, 1):
            session.add(
                Image(
                    job_id=job_id,
                    index=index,
                    seed=40 + index,
                    path=f"/tmp/{index}.png",
                    width=64,
                    height=64,
                    size_bytes=1,
                    sha256=str(index) * 64,
                    score=index / 10,
                )
            )
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status=JobStatus.SUCCEEDED,
                channel_id=5,
                finished_at=utcnow(),
                gpu_seconds=0.25,
                candidates=[{"seed": 41, "score": 0.1}],
                outcome={"mask": "/tmp/mask.png"},
                scoring=False,
            )
        )
    [claimed] = await DeliveryService(database).claim_ready()
    async with database.sessions() as session:
        alone = JobRecord.of(await session.get_one(Job, job_id))
    assert claimed == alone
    assert [image.index for image in claimed.images] == [0, 1, 2]
    assert claimed.delivered_at is not None and claimed.candidates == [{"seed": 41, "score": 0.1}]


async def test_a_result_given_back_after_a_failed_post_is_claimed_again_once(database: Database) -> None:
    job_id = await add_job(database)
    async with database.transaction() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(status=JobStatus.SUCCEEDED, channel_id=5, finished_at=utcnow())
        )
    # No back-off, so that the result is ready again as soon as it is given back.
    first = DeliveryService(database, backoff_base_seconds=0.0)
    second = DeliveryService(Database(database.url), backoff_base_seconds=0.0)
    try:
        assert [job.id for job in await first.claim_ready()] == [job_id]
        assert await second.claim_ready() == []
        assert await first.unclaim(job_id, "503 Service Unavailable") == "pending"
        assert [job.id for job in await second.claim_ready()] == [job_id]
        assert await first.claim_ready() == []
    finally:
        await second.db.dispose()


async def test_stats_count_images_per_day_and_rank_rated_images(database: Database) -> None:
    from bot.db.models import Job
    from bot.services.stats import guild_stats
    from engine.contract import JobStatus

    job_id = await _delivered_job(database)
    async with database.transaction() as session:
        job = await session.get(Job, job_id)
        job.status, job.style, job.count = JobStatus.SUCCEEDED, "anime", 2  # type: ignore[union-attr]
    ratings = RatingService(database)
    await ratings.add(message_id=MESSAGE, user_id=2, emoji="⭐", is_bot=False)
    await ratings.add(message_id=MESSAGE, user_id=3, emoji="👍", is_bot=False)
    stats = await guild_stats(database, 1)
    assert list(stats["images_per_day"].values()) == [2]
    [top] = stats["top_rated"]
    assert top["job_id"] == job_id and top["average"] == 4.5 and top["ratings"] == 2
    assert stats["average_by_style"] == {"anime": 4.5}
    assert stats["average_by_model"] == {"atelier/tiny-sd": 4.5}
    assert await guild_stats(database, 999) == {
        "images_per_day": {},
        "top_rated": [],
        "average_by_style": {},
        "average_by_model": {},
    }
