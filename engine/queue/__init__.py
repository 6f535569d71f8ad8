"""The job queue's two backends behind engine.contract.JobQueue. Torch-free: the bot imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import EngineSettings
    from engine.contract import JobQueue
    from engine.queue.database import Database

__all__ = ["check_reachable", "is_redis_url", "open_queue"]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(url: str | None) -> bool:
    return bool(url) and url.startswith(REDIS_SCHEMES)  # type: ignore[union-attr]


def open_queue(settings: EngineSettings, database: Database | None = None) -> JobQueue:
    """The backend named by ``settings.queue_url``: SQLite lease table by default, Redis Streams if redis://.
    ``database`` is the bot's: Redis needs one only on the bot's side, to apply results."""
    if is_redis_url(settings.queue_url):
        from engine.queue.redis import RedisQueue

        return RedisQueue(settings.queue_url, settings=settings, database=database)  # type: ignore[arg-type]
    from engine.queue.database import Database
    from engine.queue.sqlite import SqliteQueue

    return SqliteQueue(database or Database(settings.db_url), settings)


async def check_reachable(settings: EngineSettings, *, timeout: float = 5.0) -> None:
    """Stop a process at start, with one line, when its queue's Redis does not answer (the SQLite queue
    is the database itself: nothing to reach)."""
    if not is_redis_url(settings.queue_url):
        return
    import redis.asyncio
    from redis.exceptions import RedisError

    from engine.config import ConfigError

    client = redis.asyncio.from_url(settings.queue_url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
    except (RedisError, OSError) as error:
        raise ConfigError(
            f"ATELIER_QUEUE_URL: cannot reach Redis at {_without_password(settings.queue_url)} ({error})"
        ) from None
    finally:
        await client.aclose()


def _without_password(url: str | None) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url or "")
    if parts.password is None:
        return url or ""
    return parts._replace(netloc=f"{parts.username or ''}:***@{parts.hostname}:{parts.port or 6379}").geturl()
