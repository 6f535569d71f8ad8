"""`atelier engine`: migrate, load the pipeline once, work the queue until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from engine.compute import run_compute
from engine.config import ConfigError, EngineSettings
from engine.queue import check_reachable, is_redis_url, open_queue
from engine.worker import EngineWorker, WorkerConfig
from migrations import upgrade

log = logging.getLogger(__name__)


def quiet_model_libraries() -> None:
    # Progress bars and advisory warnings from the model libraries drown the engine's own log.
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # The hub's download progress bars stay: a first start fetches gigabytes and should show it.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def load_pipeline(settings: EngineSettings):  # type: ignore[no-untyped-def]
    quiet_model_libraries()
    from engine.pipelines.registry import resolve_model
    from engine.pipelines.text_to_image import PipelineOptions, TextToImage

    settings.ensure_dirs()
    source = resolve_model(settings.image_model, settings.models_dir)
    options = PipelineOptions(unet_quantization=settings.unet_quantization, unet_cache=settings.unet_cache)
    pipeline = TextToImage(settings.image_model, source, device=settings.device, dtype=settings.dtype, options=options)
    _attach_taesd(pipeline, settings)
    from engine.explain import ExplainingPipeline
    from engine.pipelines.tasks import ImageTasks, task_models

    # Edits, repairs and descriptions go through the same worker; their models load on first use.
    # Explain jobs are answered by the recorder around the text-to-image pipeline; the scorer and the
    # safety classifier see the other jobs as before.
    pipeline = with_scorer(ExplainingPipeline(ImageTasks(pipeline, task_models(settings))), settings)
    if not settings.safety_model:
        return pipeline
    from engine.pipelines.safety import SafetyClassifier, ScoredPipeline, build_tiny_classifier

    classifier_source = settings.safety_model
    if classifier_source == "tiny":
        classifier_source = str(build_tiny_classifier(settings.models_dir / "tiny-safety"))
    return ScoredPipeline(pipeline, SafetyClassifier(classifier_source, device=pipeline.device))


def load_pipeline_or_stop(settings: EngineSettings):  # type: ignore[no-untyped-def]
    """The model is loaded once, at start: one that cannot load stops the engine with one line, instead of
    every job failing on it later."""
    try:
        return load_pipeline(settings)
    except ConfigError:
        raise
    except Exception as error:
        log.debug("loading %s failed", settings.image_model, exc_info=True)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"ATELIER_MODEL: cannot load {settings.image_model!r}: {reason[:300]}") from None


def _attach_taesd(pipeline: Any, settings: EngineSettings) -> None:
    from engine.pipelines.previews import PreviewOptions, attach_taesd, resolve_taesd

    previews = settings.previews
    if previews and settings.safety_model:
        # The image filter judges finished images only: a preview would show what it may withhold.
        log.info("live previews are off while an image filter (ATELIER_SAFETY_MODEL) is configured")
        previews = False
    if not previews and not settings.fast_decode:
        return
    source = resolve_taesd(settings.preview_model, pipeline.pipe, settings.models_dir, tiny=settings.tiny)
    options = PreviewOptions(every_steps=settings.preview_every_steps, max_side=settings.preview_side)
    attach_taesd(pipeline, source, previews=previews, fast_decode=settings.fast_decode, options=options)


def with_scorer(pipeline, settings: EngineSettings):  # type: ignore[no-untyped-def]
    """The pipeline wrapped by the configured preference scorer (on the same device), or as it is."""
    if settings.preference_scorer is None:
        return pipeline
    from engine.pipelines.scorer import ScoringPipeline, load_scorer

    try:
        scorer = load_scorer(
            settings.preference_scorer,
            settings.scorer_processor,
            settings.models_dir,
            device=pipeline.device,
            dtype=pipeline.dtype,
        )
    except Exception as error:
        # Said as the scorer's fault, not the image model's, with the way to run without it.
        log.debug("loading the scorer %s failed", settings.preference_scorer, exc_info=True)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"ATELIER_SCORER_MODEL: cannot load {settings.preference_scorer!r}: {reason[:300]} "
            "(set ATELIER_SCORER_MODEL=none to run without scores)"
        ) from None
    log.info("scoring images with %s", scorer.name)
    return ScoringPipeline(pipeline, scorer)


async def serve(
    settings: EngineSettings, *, max_batch: int | None = None, idle_exit_seconds: float | None = None
) -> int:
    from engine.pipelines.registry import pick_device

    # Everything that can be checked is checked before minutes of model loading, not after.
    settings.ensure_dirs()
    pick_device(settings.device, settings.dtype)
    await check_reachable(settings)
    if not is_redis_url(settings.queue_url):
        # The SQLite queue lives in the project's database; an engine on Redis needs none.
        await upgrade(settings.db_url)
    pipeline = await run_compute(load_pipeline_or_stop, settings)
    queue = open_queue(settings)
    metrics_server = None
    if settings.metrics_port is not None:
        from engine.metrics import EngineMetrics, MeteredPipeline, MeteredQueue, serve_metrics

        metrics = EngineMetrics(pipeline.model)
        pipeline, queue = MeteredPipeline(pipeline, metrics), MeteredQueue(queue, metrics)
        metrics_server = serve_metrics(metrics.registry, settings.metrics_port, settings.metrics_host)
    worker = EngineWorker(
        queue,
        pipeline,
        WorkerConfig(
            max_batch=max_batch or settings.max_batch,
            batch_wait_ms=settings.batch_wait_ms,
            heartbeat_seconds=settings.heartbeat_seconds,
            poll_seconds=settings.claim_poll_seconds,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
            idle_exit_seconds=idle_exit_seconds,
        ),
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.request_stop)
    log.info("engine %s ready with %s", worker.worker_id, pipeline.model)
    try:
        await worker.run()
    finally:
        await queue.close()
        if metrics_server is not None:
            metrics_server.close()
    log.info("engine %s stopped after %d job(s)", worker.worker_id, worker.completed)
    return 0
