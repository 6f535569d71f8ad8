"""Background loops that stop between passes instead of being cancelled in the middle of one.

Cancelling a coroutine while it waits on the database leaves SQLAlchemy to close the aiosqlite
connection in a shielded task of its own. That task can outlive everything that owned the connection
and hang the event loop's shutdown for good. So a loop here is told to stop, finishes the pass it is
in, and exits; ``stop()`` waits for that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``, ending early when ``event`` is set: True if it was."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


class BackgroundLoop:
    """Runs ``body`` every ``interval`` seconds until ``stop()``.

    ``ready`` (optional) is awaited once before the first pass, and may be abandoned: it must not touch
    the database. ``delay_first`` waits one interval before the first pass. An exception in a pass is
    logged and the loop goes on.
    """

    def __init__(
        self,
        body: Callable[[], Awaitable[object]],
        interval: float,
        *,
        name: str,
        ready: Callable[[], Awaitable[object]] | None = None,
        delay_first: bool = False,
    ) -> None:
        self.body = body
        self.interval = interval
        self.name = name
        self.ready = ready
        self.delay_first = delay_first
        self.stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> BackgroundLoop:
        self._task = asyncio.create_task(self._run(), name=self.name)
        return self

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def stop(self) -> None:
        self.stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        if self.ready is not None and not await self._before_stop(self.ready()):
            return
        if self.delay_first and await wait_for_event(self.stopping, self.interval):
            return
        while not self.stopping.is_set():
            try:
                await self.body()
            except Exception:
                log.exception("%s: a pass failed", self.name)
            if await wait_for_event(self.stopping, self.interval):
                return

    async def _before_stop(self, awaitable: Awaitable[object]) -> bool:
        """Await ``awaitable`` unless the loop is stopped first (then it is abandoned): True if it finished."""
        waiting = asyncio.ensure_future(awaitable)
        stopped = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not waiting.done():
            waiting.cancel()
            return False
        return True
