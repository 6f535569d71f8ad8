"""Engine metrics scraped over HTTP after real jobs through the real worker."""

from __future__ import annotations

import asyncio

from bot.config import Settings
from engine.metrics import EngineMetrics, MeteredPipeline, MeteredQueue, serve_metrics
from engine.queue.database import Database
from engine.queue.sqlite import SqliteQueue
from engine.serve import load_pipeline
from engine.worker import EngineWorker, WorkerConfig
from tests.factories import add_job


async def _scrape(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    return response


async def test_metrics_count_jobs_batches_and_latency(database: Database, settings: Settings) -> None:
    for seed in range(3):
        await add_job(database, seed=seed)
    bad = await add_job(database, width=60)  # diffusers refuses it: a failure to count
    metrics = EngineMetrics("atelier/tiny-sd")
    pipeline = MeteredPipeline(load_pipeline(settings), metrics)
    queue = MeteredQueue(SqliteQueue(database, settings), metrics)
    worker = EngineWorker(queue, pipeline, WorkerConfig(max_batch=4, poll_seconds=0.02, idle_exit_seconds=0.2))
    server = await serve_metrics(metrics, 0, "127.0.0.1")
    port = server.sockets[0].getsockname()[1]
    try:
        await asyncio.wait_for(worker.run(), 120)
        page = await _scrape(port)
    finally:
        server.close()
    assert page.startswith("HTTP/1.1 200 OK")
    assert 'atelier_engine_jobs_total{status="succeeded",model="atelier/tiny-sd"} 3' in page
    assert 'atelier_engine_jobs_total{status="failed",model="atelier/tiny-sd"} 1' in page
    assert "atelier_engine_batch_size_count" in page and "atelier_engine_generation_seconds_sum" in page
    assert bad
