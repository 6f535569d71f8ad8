"""Container health checks: ``python healthcheck.py engine`` or ``python healthcheck.py bot``.

Exit 0 when healthy. Torch-free and quick, since Docker runs it every 30 seconds:

- engine: an engine on this host (the container's hostname) has a fresh heartbeat in the queue's
  worker list, so a process that is up but wedged, or lost its queue, turns unhealthy;
- bot: the bot holds a live Discord gateway connection (the state it writes, see bot.services.health),
  the database answers with the migrated schema, and so does Redis when the queue is there.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from types import SimpleNamespace
from typing import Any

from bot.config import Settings
from engine.queue import open_queue
from engine.queue.database import Database


async def _workers(queue: Any, settings: Settings) -> list[dict[str, Any]]:
    workers = getattr(queue, "workers", None)
    if workers is not None:  # Redis: read without touching any database
        return await workers()
    status = getattr(queue, "status", None)
    if status is not None:
        return (await status())["workers"]
    from bot.services.status import queue_status

    return (await queue_status(SimpleNamespace(queue=queue, settings=settings, db=queue.db)))["workers"]


async def engine_healthy(settings: Settings) -> bool:
    queue = open_queue(settings)
    try:
        host = socket.gethostname()
        return any(w["alive"] and w["host"] == host for w in await _workers(queue, settings))
    finally:
        await queue.close()


async def bot_healthy(settings: Settings) -> bool:
    from sqlalchemy import text

    from bot.services.health import gateway_health, health_file

    problem = gateway_health(health_file(settings.data_dir))
    if problem is not None:
        print(f"bot unhealthy: {problem}", file=sys.stderr)
        return False

    database = Database(settings.db_url)
    try:
        async with database.sessions() as session:
            await session.execute(text("SELECT count(*) FROM jobs"))
        queue = open_queue(settings, database)
        redis = getattr(queue, "redis", None)
        if redis is not None:
            await redis.ping()
            await queue.close()
        return True
    finally:
        await database.dispose()


def main(argv: list[str]) -> int:
    role = argv[1] if len(argv) > 1 else "engine"
    check = {"engine": engine_healthy, "bot": bot_healthy}[role]
    try:
        healthy = asyncio.run(asyncio.wait_for(check(Settings()), timeout=8))
    except Exception as error:
        print(f"{role} unhealthy: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if not healthy and role == "engine":
        print(f"{role} unhealthy: no fresh heartbeat from {socket.gethostname()}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
