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

__all__ = ["ClaimedJob", "GeneratedImage", "JobParams", "JobQueue", "JobResult", "LeaseState", "open_queue"]


def open_queue(settings, database=None) -> JobQueue:  # type: ignore[no-untyped-def]
    """The backend named by ``settings.queue_url``: SQLite lease table by default, Redis Streams if redis://."""
    url = settings.queue_url
    if url and url.startswith(("redis://", "rediss://", "unix://")):
        from engine.queue.redis_streams import RedisQueue

        return RedisQueue(url, settings=settings, database=database)
    from bot.db.session import Database
    from engine.queue.sqlite import SqliteQueue

    return SqliteQueue(database or Database(settings.db_url), settings)
