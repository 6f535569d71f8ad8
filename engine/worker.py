"""The engine's loop: claim, gather a batch, generate with the leases held, report; stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from engine.background import BackgroundLoop, wait_for_event
from engine.compute import run_compute
from engine.contract import ClaimedJob, JobQueue, JobResult, JobSpec, LeaseState, PermanentJobError
from engine.pipelines.text_to_image import BatchOutput, Interrupted

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.pipelines.previews import PreviewSink

log = logging.getLogger(__name__)

# Eight jobs per call: measured ahead of four, and level with sixteen without sixteen's straggler
# batches when a burst lands over several claims. A 50 ms window: a burst of concurrent requests lands
# in the queue over about a tenth of a second. A lone job on an idle engine does not wait at all (see
# EngineWorker._run_claim).
DEFAULT_MAX_BATCH = 8
DEFAULT_BATCH_WAIT_MS = 50.0
_FIRST_PROGRESS_AFTER_SECONDS = 0.25


class Pipeline(Protocol):
    model: str

    def generate(
        self,
        jobs: Sequence[JobSpec],
        *,
        should_stop: Callable[[], bool] = ...,
        on_step: Callable[[int, int], None] | None = ...,
        previews: PreviewSink | None = ...,
    ) -> BatchOutput: ...


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerConfig:
    # Jobs run as one pipeline call at most (each job may hold several images of a grid).
    max_batch: int = DEFAULT_MAX_BATCH
    # When a claim brings fewer than max_batch jobs, keep claiming for up to this long before running:
    # the jobs of a burst reach the queue over tens of milliseconds, and one batched call costs far less
    # than several. Not for a lone job found by an idle engine: nothing suggests company is coming.
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 0.2
    shutdown_grace_seconds: float = 20.0
    # Exit after this long with nothing to do (used when `atelier imagine` starts an engine for itself).
    idle_exit_seconds: float | None = None
    # Progress goes to the queue (when it can store it) at most this often per batch; Discord edits
    # are throttled to one a second anyway.
    progress_interval_seconds: float = 1.0


@dataclass
class _Claim:
    """Jobs claimed together. Their leases are renewed until each one is settled, including the jobs
    that wait while an earlier group of the same claim runs."""

    jobs: list[ClaimedJob]
    lost: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    settled: set[str] = field(default_factory=set)
    abort: bool = False


@dataclass
class _Batch:
    jobs: list[ClaimedJob]
    claim: _Claim

    def gone(self, job: ClaimedJob) -> bool:
        return job.id in self.claim.lost or job.id in self.claim.cancelled

    def should_stop(self) -> bool:
        return self.claim.abort or all(self.gone(job) for job in self.jobs)


class EngineWorker:
    def __init__(self, queue: JobQueue, pipeline: Pipeline, config: WorkerConfig, worker_id: str | None = None):
        self.queue = queue
        self.pipeline = pipeline
        self.config = config
        self.worker_id = worker_id or new_worker_id()
        self.stopping = asyncio.Event()
        self.completed = 0
        self.batches = 0
        # job id → (step, total) for the jobs being generated now.
        self.progress: dict[str, tuple[int, int]] = {}
        # Optional on a queue: ``progress(job, step)`` stores the step the member's status message shows.
        self._report_progress: Callable[[ClaimedJob, int], Any] | None = getattr(queue, "progress", None)
        # Optional too: ``wait_for_work(timeout, stop)`` returns early when new work may have arrived.
        self._wait_for_work_in_queue: Callable[[float, asyncio.Event], Any] | None = getattr(
            queue, "wait_for_work", None
        )
        self._settling: asyncio.Task[None] | None = None
        # Lease renewals, some perhaps still running on for a claim whose results are being recorded.
        self._leases: set[BackgroundLoop] = set()

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stop requested: finishing the current job, claiming no more")
        self.stopping.set()

    async def run(self) -> None:
        heartbeat = BackgroundLoop(self._heartbeat, self.config.heartbeat_seconds, name="engine-heartbeat").start()
        idle_since = time.monotonic()
        # A fresh engine has had nothing to do, as has one whose last claim came back empty.
        was_idle = True
        try:
            while not self.stopping.is_set():
                jobs = await self._claim(self.config.max_batch)
                if not jobs:
                    was_idle = True
                    idle = self.config.idle_exit_seconds
                    if idle is not None and time.monotonic() - idle_since > idle:
                        log.info("idle for %.0fs, exiting", idle)
                        break
                    await self._wait_for_work()
                    continue
                lone = was_idle and len(jobs) == 1
                await self._run_claim(_Claim(jobs), gather=not lone)
                idle_since = time.monotonic()
                if lone:
                    # An idle server: the result is recorded first, and the next look waits for a job to
                    # be published (at once if one was, meanwhile) or the poll interval. A look straight
                    # away would find nothing, and run beside the recording and the bot's delivery it
                    # only holds up the member's image. Under load the next claim still overlaps the
                    # recording of the last batch.
                    await self._drain()
                    await self._wait_for_work()
                    continue
                was_idle = False
        finally:
            try:
                await self._drain()
            finally:
                # Loops end between passes, never mid-query (see engine.background).
                await asyncio.gather(*(leases.stop() for leases in self._leases), heartbeat.stop())
                await self.queue.worker_stopped(self.worker_id)

    async def _wait_for_work(self) -> None:
        """Idle: until the queue sees a change (when it can tell), a stop, or the poll interval."""
        if self._wait_for_work_in_queue is not None:
            await self._wait_for_work_in_queue(self.config.poll_seconds, self.stopping)
            return
        await wait_for_event(self.stopping, self.config.poll_seconds)

    async def _claim(self, limit: int) -> list[ClaimedJob]:
        return await self.queue.claim(self.worker_id, limit=max(1, limit), models=[self.pipeline.model])

    async def _fill(self, claim: _Claim) -> None:
        """When the first claim fell short of max_batch, keep claiming until the batch is full or
        batch_wait_ms has passed since the first job was taken."""
        limit = max(1, self.config.max_batch)
        wait = self.config.batch_wait_ms / 1000
        deadline = time.monotonic() + wait
        # A few looks within the window, so that a batch that fills early starts early; never slower
        # than the idle polling.
        interval = min(max(wait / 4, 0.005), self.config.poll_seconds)
        while len(claim.jobs) < limit and not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(interval, remaining))
            claim.jobs += await self._claim(limit - len(claim.jobs))

    async def _run_claim(self, claim: _Claim, *, gather: bool = True) -> None:
        """``gather``: wait up to batch_wait_ms for more jobs first. Off for a lone job found by an idle
        engine: one request at a time must not pay the window, and the first job of a burst that runs
        alone is followed by the rest of it, gathered while the engine worked."""
        # Leases are renewed from the first claim on, through the wait for more jobs.
        leases = BackgroundLoop(
            lambda: self._renew_leases(claim), self.config.heartbeat_seconds, name="engine-leases", delay_first=True
        ).start()
        self._leases = {loop for loop in self._leases if not loop.done()} | {leases}
        grace = asyncio.create_task(self._abort_after_grace(claim))
        try:
            if gather:
                await self._fill(claim)
            for group in _group_by_batch_key(claim.jobs):
                await self._run_batch(_Batch(group, claim))
        finally:
            grace.cancel()
            # The last batch's results may still be being recorded: its leases are renewed until they are.
            settling = self._settling
            if settling is None or settling.done():
                leases.stopping.set()
            else:
                settling.add_done_callback(lambda _: leases.stopping.set())

    async def _drain(self) -> None:
        settling, self._settling = self._settling, None
        if settling is None:
            return
        try:
            await settling
        except Exception:
            # The jobs keep their leases until they expire, then go back to the queue for another try.
            log.exception("recording the results of a batch failed")

    async def _heartbeat(self) -> None:
        await self.queue.heartbeat(self.worker_id, self.pipeline.model)

    async def _renew_leases(self, claim: _Claim) -> None:
        for job in list(claim.jobs):
            if job.id in claim.lost or job.id in claim.settled:
                continue
            try:
                state = await self.queue.renew(job)
            except Exception:
                # A busy database now and then must not end the renewals of every job in the claim.
                log.exception("renewing the lease on job %s failed", job.id)
                continue
            if state is LeaseState.LOST:
                log.warning("lost the lease on job %s", job.id)
                claim.lost.add(job.id)
            elif state is LeaseState.CANCELLED:
                claim.cancelled.add(job.id)

    async def _abort_after_grace(self, claim: _Claim) -> None:
        await self.stopping.wait()
        await asyncio.sleep(self.config.shutdown_grace_seconds)
        log.warning("shutdown grace period over: interrupting and releasing %d job(s)", len(claim.jobs))
        claim.abort = True

    async def _run_batch(self, batch: _Batch) -> None:
        # Jobs that waited behind another group may have been cancelled or lost meanwhile.
        live = [job for job in batch.jobs if not batch.gone(job)]
        if len(live) < len(batch.jobs):
            await self._settle_gone(batch, [job for job in batch.jobs if batch.gone(job)])
            if not live:
                return
            batch = _Batch(live, batch.claim)
        if batch.claim.abort:
            await self._settle_interrupted(batch)
            return
        reporter = _ProgressReporter(self, batch)
        error: Exception | None = None
        try:
            output = await run_compute(
                self.pipeline.generate,
                [job.spec for job in batch.jobs],
                should_stop=batch.should_stop,
                on_step=reporter.on_step,
                previews=reporter,
            )
        except Exception as exc:
            error = exc
        finally:
            await reporter.close()
        self.batches += 1
        if isinstance(error, Interrupted):
            await self._settle_interrupted(batch)
            return
        if error is not None:
            await self._settle_error(batch, error)
            return
        # Record the results while the next batch generates: writing PNGs and database rows is work for
        # the CPU and the event loop, and the accelerator would otherwise sit idle through it. One batch
        # is recorded at a time, in order.
        await self._drain()
        self._settling = asyncio.create_task(self._settle_success(batch, output))

    async def _settle_success(self, batch: _Batch, output: BatchOutput) -> None:
        # Best-of candidates are drawn too, so they count in a job's share of the call.
        images = sum(job.spec.count * job.spec.best_of for job in batch.jobs) or 1
        # Settled from here on: a renewal racing the completion would read it as a lost lease.
        batch.claim.settled.update(job.id for job in batch.jobs)
        finished: list[tuple[ClaimedJob, JobResult]] = []
        extras = output.extras or [{} for _ in batch.jobs]
        for job, generated, extra in zip(batch.jobs, output.images, extras, strict=True):
            if job.id in batch.claim.lost:
                continue
            if job.id in batch.claim.cancelled:
                await self.queue.fail(job, "cancelled", retryable=False)
                continue
            # A job's share of the call follows its share of the images.
            seconds = output.seconds * job.spec.count * job.spec.best_of / images
            finished.append((job, JobResult(images=generated, gpu_seconds=seconds, extra=extra)))
        done = await self.queue.complete_many(finished) if finished else []
        for (job, result), recorded in zip(finished, done, strict=True):
            if recorded:
                self.completed += 1
                log.info("job %s done in %.2fs (batch of %d)", job.id, result.gpu_seconds, len(batch.jobs))

    async def _settle_gone(self, batch: _Batch, jobs: list[ClaimedJob]) -> None:
        for job in jobs:
            batch.claim.settled.add(job.id)
            if job.id not in batch.claim.lost:
                await self.queue.fail(job, "cancelled", retryable=False)

    async def _settle_interrupted(self, batch: _Batch) -> None:
        for job in batch.jobs:
            batch.claim.settled.add(job.id)
            if job.id in batch.claim.lost:
                continue
            if job.id in batch.claim.cancelled:
                await self.queue.fail(job, "cancelled", retryable=False)
            else:
                await self.queue.release(job)

    async def _settle_error(self, batch: _Batch, error: Exception) -> None:
        if len(batch.jobs) > 1 and isinstance(error, torch.OutOfMemoryError):
            # Halve and retry, so one oversized burst degrades to smaller batches instead of failing.
            log.warning("out of memory with a batch of %d; splitting", len(batch.jobs))
            _free_accelerator_memory()
            half = len(batch.jobs) // 2
            for part in (batch.jobs[:half], batch.jobs[half:]):
                await self._run_batch(_Batch(part, batch.claim))
            return
        if len(batch.jobs) > 1:
            # Run each alone so that a job that fails, fails alone.
            log.warning(
                "a batch of %d failed (%s: %s); running its jobs one by one",
                len(batch.jobs),
                type(error).__name__,
                error,
            )
            for job in batch.jobs:
                await self._run_batch(_Batch([job], batch.claim))
            return
        job = batch.jobs[0]
        batch.claim.settled.add(job.id)
        log.error("job %s failed (attempt %d of %d)", job.id, job.attempt, job.max_attempts, exc_info=error)
        # The job's own fault will not get better on a retry; anything else might (a busy GPU, a driver hiccup).
        if isinstance(error, PermanentJobError):
            await self.queue.fail(job, str(error), retryable=False)
        else:
            await self.queue.fail(job, f"{type(error).__name__}: {error}", retryable=True)


class _ProgressReporter:
    """Carries step callbacks from the generation thread to the event loop: ``worker.progress`` always,
    the queue's optional ``progress(job, step)`` at most once per interval, with a preview picture of
    each job when the pipeline decoded one. The pipeline asks ``wants_preview`` before decoding, so
    previews come at most once per interval too, and none is decoded that would not be sent."""

    def __init__(self, worker: EngineWorker, batch: _Batch) -> None:
        self.worker = worker
        self.batch = batch
        self.loop = asyncio.get_running_loop()
        # A batch that ends within its first moments needs no report (its completion says it all); one
        # that runs longer shows its first step soon, then one at most every interval.
        interval = worker.config.progress_interval_seconds
        self.last_report = time.monotonic() - interval + min(interval, _FIRST_PROGRESS_AFTER_SECONDS)
        # Written by the generation thread only (in wants_preview).
        self.last_preview = self.last_report
        self.pending: set[asyncio.Task[None]] = set()
        self.step = 0
        # job id → the newest preview not yet sent.
        self.previews: dict[str, bytes] = {}
        for job in batch.jobs:
            worker.progress[job.id] = (0, job.spec.steps)

    def on_step(self, step: int, total: int) -> None:
        # Called from the generation thread: nothing here may touch the loop's state directly.
        self.loop.call_soon_threadsafe(self._record, step, total)

    def wants_preview(self, step: int, total: int) -> bool:
        # Called from the generation thread before it decodes.
        if self.worker._report_progress is None or step >= total:
            return False
        now = time.monotonic()
        if now - self.last_preview < self.worker.config.progress_interval_seconds:
            return False
        self.last_preview = now
        return True

    def on_preview(self, step: int, total: int, images: list[bytes]) -> None:
        self.loop.call_soon_threadsafe(self._record_preview, step, total, images)

    def _record_preview(self, step: int, total: int, images: list[bytes]) -> None:
        self.previews.update((job.id, image) for job, image in zip(self.batch.jobs, images, strict=False))
        # Sent now (or by the send under way, which looks again before it ends), not an interval later.
        self._record(step, total, force=True)

    def _record(self, step: int, total: int, *, force: bool = False) -> None:
        for job in self.batch.jobs:
            self.worker.progress[job.id] = (step, total)
        report = self.worker._report_progress
        if report is None or step >= total:
            return  # the final step is reported by the job's completion
        self.step = step
        now = time.monotonic()
        if self.pending or (not force and now - self.last_report < self.worker.config.progress_interval_seconds):
            return
        self.last_report = now
        task = asyncio.create_task(self._send(report))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _send(self, report: Callable[..., Any]) -> None:
        # Previews that arrived while a report was being written go out in another round of this one.
        while True:
            step, previews, self.previews = self.step, self.previews, {}
            for job in self.batch.jobs:
                if self.batch.gone(job):
                    continue
                preview = previews.get(job.id)
                try:
                    # Only with a preview: a queue's progress need not take one.
                    await (report(job, step) if preview is None else report(job, step, preview=preview))
                except Exception:
                    log.debug("could not record progress of job %s", job.id, exc_info=True)
            if not self.previews:
                return

    async def close(self) -> None:
        # Let step callbacks already queued from the thread run, and progress writes land, before the
        # jobs are settled: a late write must never follow the job's completion.
        await asyncio.sleep(0)
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
        for job in self.batch.jobs:
            self.worker.progress.pop(job.id, None)


def _group_by_batch_key(jobs: list[ClaimedJob]) -> list[list[ClaimedJob]]:
    groups: dict[tuple, list[ClaimedJob]] = {}
    for job in jobs:
        groups.setdefault(job.spec.batch_key, []).append(job)
    return list(groups.values())


def _free_accelerator_memory() -> None:
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort only
        log.debug("could not empty the CUDA cache", exc_info=True)
