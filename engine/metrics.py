"""Prometheus metrics for an engine, in the text exposition format, on a port of its own (off by default).

The queue and the pipeline are wrapped rather than instrumented inside the worker, so the worker's
logic stays as it is and every backend is measured the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, float("inf"))


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = list(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for bound, count in zip(self.buckets, self.counts, strict=True):
            label = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'{name}_bucket{{le="{label}"}} {count}')
        lines += [f"{name}_sum {self.total:.6f}", f"{name}_count {self.count}"]
        return lines


class EngineMetrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.jobs: Counter[str] = Counter()
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.generation_seconds = Histogram(LATENCY_BUCKETS)

    def render(self) -> str:
        lines = [
            "# HELP atelier_engine_jobs_total Jobs this engine settled, by outcome.",
            "# TYPE atelier_engine_jobs_total counter",
        ]
        for status in sorted(self.jobs):
            lines.append(f'atelier_engine_jobs_total{{status="{status}",model="{self.model}"}} {self.jobs[status]}')
        lines += self.batch_sizes.render("atelier_engine_batch_size", "Jobs per pipeline call.")
        lines += self.generation_seconds.render("atelier_engine_generation_seconds", "Seconds per pipeline call.")
        allocated = _gpu_memory_bytes()
        if allocated is not None:
            lines += [
                "# HELP atelier_engine_gpu_memory_bytes Accelerator memory allocated by this engine.",
                "# TYPE atelier_engine_gpu_memory_bytes gauge",
                f"atelier_engine_gpu_memory_bytes {allocated}",
            ]
        return "\n".join(lines) + "\n"


def _gpu_memory_bytes() -> int | None:
    try:
        import torch

        return int(torch.cuda.memory_allocated()) if torch.cuda.is_available() else None
    except Exception:
        return None


class MeteredPipeline:
    def __init__(self, pipeline: Any, metrics: EngineMetrics) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.model = pipeline.model

    def generate(self, jobs: Sequence[Any], **options: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.pipeline.generate(jobs, **options)
        finally:
            self.metrics.batch_sizes.observe(len(jobs))
            self.metrics.generation_seconds.observe(time.perf_counter() - started)


class MeteredQueue:
    """Passes every call through; counts how jobs end."""

    def __init__(self, queue: Any, metrics: EngineMetrics) -> None:
        self._queue = queue
        self.metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def complete(self, job: Any, result: Any) -> bool:
        return (await self.complete_many([(job, result)]))[0]

    async def complete_many(self, results: list[tuple[Any, Any]]) -> list[bool]:
        done = await self._queue.complete_many(results)
        for recorded in done:
            self.metrics.jobs["succeeded" if recorded else "lost"] += 1
        return done

    async def fail(self, job: Any, error: str, *, retryable: bool = True) -> str:
        status = await self._queue.fail(job, error, retryable=retryable)
        self.metrics.jobs["retried" if status == "queued" else str(status)] += 1
        return status

    async def release(self, job: Any) -> None:
        await self._queue.release(job)
        self.metrics.jobs["released"] += 1


async def serve_metrics(metrics: EngineMetrics, port: int, host: str = "0.0.0.0") -> asyncio.Server:
    """A minimal HTTP endpoint: every request gets the metrics page."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = metrics.render().encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server
