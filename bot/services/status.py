"""What an operator asks first: how deep is the queue, what runs, which engines are alive."""

from __future__ import annotations

from typing import Any

from engine.queue import is_redis_url


async def queue_status(services: Any) -> dict[str, Any]:
    backend = "redis" if is_redis_url(services.settings.queue_url) else "sqlite"
    return {"backend": backend, **(await services.queue.status())}
