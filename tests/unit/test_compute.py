"""All model work in a process runs on one thread (see engine.compute for why)."""

from __future__ import annotations

import asyncio
import threading

from engine.compute import call_compute, run_compute


def _thread_id() -> int:
    return threading.get_ident()


async def test_loop_callers_and_blocking_callers_share_one_thread() -> None:
    from_loop = await asyncio.gather(*(run_compute(_thread_id) for _ in range(4)))
    from_threads = await asyncio.gather(*(asyncio.to_thread(call_compute, _thread_id) for _ in range(4)))
    assert len(set(from_loop) | set(from_threads)) == 1
    assert from_loop[0] != threading.get_ident()


def test_a_call_from_the_compute_thread_itself_does_not_wait_on_itself() -> None:
    # Loading code that calls back into call_compute must not deadlock the single thread.
    assert call_compute(call_compute, _thread_id) == call_compute(_thread_id)
