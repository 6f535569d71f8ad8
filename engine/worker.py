"""The engine's loop: claim, generate with the lease held, report; stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from engine.pipelines.costs import compute_units
from engine.pipelines.text_to_image import BatchOutput, Interrupted
from engine.queue.protocol import ClaimedJob, JobParams, JobQueue, JobResult, LeaseState

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)


class Pipeline(Protocol):
    model: str

    def generate(
        self,
        jobs: Sequence[JobParams],
        *,
        should_stop: Callable[[], bool] = ...,
        on_step: Callable[[int, int], None] | None = ...,
    ) -> BatchOutput: ...


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _is_out_of_memory(error: BaseException) -> bool:
    return type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower()


@dataclass
class WorkerConfig:
    max_batch: int = 1
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 0.2
    shutdown_grace_seconds: float = 20.0
    # Exit after this long with nothing to do (used when `atelier imagine` starts an engine for itself).
    idle_exit_seconds: float | None = None


@dataclass
class _Batch:
    jobs: list[ClaimedJob]
    lost: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    abort: bool = False

    def should_stop(self) -> bool:
        return self.abort or len(self.lost | self.cancelled) == len(self.jobs)


class EngineWorker:
    def __init__(self, queue: JobQueue, pipeline: Pipeline, config: WorkerConfig, worker_id: str | None = None):
        self.queue = queue
        self.pipeline = pipeline
        self.config = config
        self.worker_id = worker_id or new_worker_id()
        self.stopping = asyncio.Event()
        self.completed = 0

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stop requested: finishing the current job, claiming no more")
        self.stopping.set()

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        idle_since = time.monotonic()
        try:
            while not self.stopping.is_set():
                jobs = await self.queue.claim(self.worker_id, limit=self.config.max_batch, models=[self.pipeline.model])
                if not jobs:
                    idle = self.config.idle_exit_seconds
                    if idle is not None and time.monotonic() - idle_since > idle:
                        log.info("idle for %.0fs, exiting", idle)
                        break
                    try:
                        await asyncio.wait_for(self.stopping.wait(), self.config.poll_seconds)
                    except TimeoutError:
                        pass
                    continue
                for group in _group_by_batch_key(jobs):
                    await self._run_batch(_Batch(group))
                idle_since = time.monotonic()
        finally:
            heartbeat.cancel()
            await self.queue.worker_stopped(self.worker_id)

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.queue.heartbeat(self.worker_id, self.pipeline.model)
            except Exception:
                log.exception("worker heartbeat failed")
            await asyncio.sleep(self.config.heartbeat_seconds)

    async def _keep_leases(self, batch: _Batch) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            for job in batch.jobs:
                if job.id in batch.lost:
                    continue
                state = await self.queue.renew(job)
                if state is LeaseState.LOST:
                    log.warning("lost the lease on job %s", job.id)
                    batch.lost.add(job.id)
                elif state is LeaseState.CANCELLED:
                    batch.cancelled.add(job.id)

    async def _abort_after_grace(self, batch: _Batch) -> None:
        await self.stopping.wait()
        await asyncio.sleep(self.config.shutdown_grace_seconds)
        log.warning("shutdown grace period over: interrupting and releasing %d job(s)", len(batch.jobs))
        batch.abort = True

    async def _run_batch(self, batch: _Batch) -> None:
        leases = asyncio.create_task(self._keep_leases(batch))
        grace = asyncio.create_task(self._abort_after_grace(batch))
        error: Exception | None = None
        try:
            output = await asyncio.to_thread(
                self.pipeline.generate, [job.params for job in batch.jobs], should_stop=batch.should_stop
            )
        except Exception as exc:
            error = exc
        finally:
            leases.cancel()
            grace.cancel()
        if isinstance(error, Interrupted):
            await self._settle_interrupted(batch)
            return
        if error is not None:
            await self._settle_error(batch, error)
            return
        share = output.seconds / len(batch.jobs)
        for job, images in zip(batch.jobs, output.images, strict=True):
            if job.id in batch.lost:
                continue
            if job.id in batch.cancelled:
                await self.queue.fail(job, "cancelled", retryable=False)
                continue
            result = JobResult(images=images, gpu_seconds=share, compute_units=compute_units(job.params))
            if await self.queue.complete(job, result):
                self.completed += 1
                log.info("job %s done in %.2fs", job.id, share)

    async def _settle_interrupted(self, batch: _Batch) -> None:
        for job in batch.jobs:
            if job.id in batch.lost:
                continue
            if job.id in batch.cancelled:
                await self.queue.fail(job, "cancelled", retryable=False)
            else:
                await self.queue.release(job)

    async def _settle_error(self, batch: _Batch, error: Exception) -> None:
        if len(batch.jobs) > 1 and _is_out_of_memory(error):
            # Halve and retry, so one oversized burst degrades to smaller batches instead of failing.
            log.warning("out of memory with a batch of %d; splitting", len(batch.jobs))
            _free_accelerator_memory()
            half = len(batch.jobs) // 2
            for part in (batch.jobs[:half], batch.jobs[half:]):
                await self._run_batch(_Batch(part))
            return
        if len(batch.jobs) > 1:
            # Run each alone so that a job that fails, fails alone.
            for job in batch.jobs:
                await self._run_batch(_Batch([job]))
            return
        job = batch.jobs[0]
        log.exception("job %s failed (attempt %d of %d)", job.id, job.attempt, job.max_attempts, exc_info=error)
        # Bad parameters will not get better on a retry; anything else might (a busy GPU, a driver hiccup).
        retryable = not isinstance(error, ValueError | TypeError)
        await self.queue.fail(job, f"{type(error).__name__}: {error}", retryable=retryable)


def _group_by_batch_key(jobs: list[ClaimedJob]) -> list[list[ClaimedJob]]:
    groups: dict[tuple, list[ClaimedJob]] = {}
    for job in jobs:
        groups.setdefault(job.params.batch_key, []).append(job)
    return list(groups.values())


def _free_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort only
        log.debug("could not empty the CUDA cache", exc_info=True)
