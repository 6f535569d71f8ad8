"""Engine metrics scraped over HTTP after real jobs through the real worker."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bot.config import Settings
from engine.metrics import EngineMetrics, MeteredPipeline, MeteredQueue, serve_metrics
from engine.queue.database import Database
from engine.queue.sqlite import SqliteQueue
from engine.serve import load_pipeline
from engine.worker import EngineWorker, WorkerConfig
from tests.factories import add_job


async def _scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())


async def test_metrics_count_jobs_batches_and_latency(database: Database, settings: Settings) -> None:
    for seed in range(3):
        await add_job(database, seed=seed)
    bad = await add_job(database, width=60)  # diffusers refuses it: a failure to count
    metrics = EngineMetrics("atelier/tiny-sd")
    pipeline = MeteredPipeline(load_pipeline(settings), metrics)
    queue = MeteredQueue(SqliteQueue(database, settings), metrics)
    worker = EngineWorker(queue, pipeline, WorkerConfig(max_batch=4, poll_seconds=0.02, idle_exit_seconds=0.2))
    server = serve_metrics(metrics.registry, 0, "127.0.0.1")
    try:
        await asyncio.wait_for(worker.run(), 120)
        page = await _scrape(server.port)
    finally:
        server.close()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }
    model = ("model", "atelier/tiny-sd")
    assert samples[("atelier_engine_jobs_total", (model, ("status", "succeeded")))] == 3
    assert samples[("atelier_engine_jobs_total", (model, ("status", "failed")))] == 1
    calls = samples[("atelier_engine_batch_size_count", ())]
    assert 1 <= calls <= 4 and samples[("atelier_engine_batch_size_sum", ())] == 4  # every job, in some batches
    assert samples[("atelier_engine_generation_seconds_count", ())] == calls
    assert bad
