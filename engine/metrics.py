"""Prometheus metrics (prometheus_client) on a port of their own, off by default.

Each process keeps its own registry, so an engine and a bot started in one test process, or two engines,
never share or collide on a metric. The engine's queue and pipeline are wrapped rather than instrumented
inside the worker, so the worker's logic stays as it is and every backend is measured the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


class EngineMetrics:
    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.model = model
        self.registry = registry or CollectorRegistry()
        self.jobs = Counter(
            "atelier_engine_jobs", "Jobs this engine settled, by outcome.", ["status", "model"], registry=self.registry
        )
        self.batch_sizes = Histogram(
            "atelier_engine_batch_size", "Jobs per pipeline call.", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.generation_seconds = Histogram(
            "atelier_engine_generation_seconds",
            "Seconds per pipeline call.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        if _cuda_available():
            gpu = Gauge(
                "atelier_engine_gpu_memory_bytes",
                "Accelerator memory allocated by this engine.",
                registry=self.registry,
            )
            gpu.set_function(_gpu_memory_bytes)

    def settled(self, status: str) -> None:
        self.jobs.labels(status=status, model=self.model).inc()


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _gpu_memory_bytes() -> float:
    import torch

    return float(torch.cuda.memory_allocated())


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
            self.metrics.settled("succeeded" if recorded else "lost")
        return done

    async def fail(self, job: Any, error: str, *, retryable: bool = True) -> str:
        status = await self._queue.fail(job, error, retryable=retryable)
        self.metrics.settled("retried" if status == "queued" else str(status))
        return status

    async def release(self, job: Any) -> None:
        await self._queue.release(job)
        self.metrics.settled("released")


class MetricsServer:
    """prometheus_client's HTTP server in its own thread; ``port`` 0 takes a free one (``.port`` says which)."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str) -> None:
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host, self.port = host, int(self._server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> MetricsServer:
    return MetricsServer(registry, port, host)
