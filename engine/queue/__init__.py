"""The job queue. Torch-free: the bot imports it."""

from __future__ import annotations

from engine.queue.protocol import (
    ClaimedJob,
    GeneratedImage,
    JobParams,
    JobQueue,
    JobResult,
    LeaseState,
)

__all__ = [
    "ClaimedJob",
    "GeneratedImage",
    "JobParams",
    "JobQueue",
    "JobResult",
    "LeaseState",
    "is_redis_url",
    "open_queue",
]


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(url: str | None) -> bool:
    return bool(url) and url.startswith(REDIS_SCHEMES)  # type: ignore[union-attr]


def open_queue(settings, database=None) -> JobQueue:  # type: ignore[no-untyped-def]
    """The backend named by ``settings.queue_url``: SQLite lease table by default, Redis Streams if redis://."""
    if is_redis_url(settings.queue_url):
        from engine.queue.redis import RedisQueue

        return RedisQueue(settings.queue_url, settings=settings, database=database)
    from bot.db.session import Database
    from engine.queue.sqlite import SqliteQueue

    return SqliteQueue(database or Database(settings.db_url), settings)
