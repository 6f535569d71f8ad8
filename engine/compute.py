"""One thread for all model work in a process.

PyTorch's CPU kernels run on an OpenMP team that belongs to the calling thread. A pool that hands each
call to whichever of its threads is free builds a team per thread, and the idle teams' spinning workers
take the cores from the busy one: a batch of 8 tiny images took 220–250 ms from ``asyncio.to_thread``
against 140 ms from one fixed thread on a 2-core machine. So loading, warm-up and every generation go
through this one thread.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atelier-compute")


def _on_compute_thread() -> bool:
    return threading.current_thread().name.startswith("atelier-compute")


async def run_compute(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Await ``fn(*args, **kwargs)`` run on the compute thread."""
    return await asyncio.get_running_loop().run_in_executor(_executor, functools.partial(fn, *args, **kwargs))


def call_compute(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the compute thread, blocking the caller (for code without a loop)."""
    if _on_compute_thread():
        return fn(*args, **kwargs)
    return _executor.submit(fn, *args, **kwargs).result()
