"""The engine end to end with the tiny pipeline: in process, and as a real process killed mid-job."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.config import Settings
from bot.db.models import Job
from engine.contract import JobStatus
from engine.queue.database import Database
from engine.queue.sqlite import SqliteQueue
from engine.serve import load_pipeline
from engine.worker import EngineWorker, WorkerConfig
from tests.factories import add_job


@pytest.fixture(scope="module")
def tiny_pipeline(models_dir: Path):  # type: ignore[no-untyped-def]
    return load_pipeline(Settings(tiny=True, models_path=models_dir))


async def _job(db: Database, job_id: str) -> Job:
    async with db.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def _run_until_idle(database: Database, settings: Settings, pipeline, max_batch: int = 1) -> EngineWorker:  # type: ignore[no-untyped-def]
    worker = EngineWorker(
        SqliteQueue(database, settings),
        pipeline,
        WorkerConfig(max_batch=max_batch, heartbeat_seconds=0.2, poll_seconds=0.02, idle_exit_seconds=0.1),
    )
    await asyncio.wait_for(worker.run(), timeout=120)
    return worker


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


async def test_worker_writes_pngs_with_parameters_and_seeds_are_reproducible(
    database: Database, settings: Settings, tiny_pipeline
) -> None:  # type: ignore[no-untyped-def]
    same_a = await add_job(database, prompt="a lighthouse on a cliff", seed=42, age_seconds=3)
    same_b = await add_job(database, prompt="a lighthouse on a cliff", seed=42, age_seconds=2)
    other = await add_job(database, prompt="a lighthouse on a cliff", seed=43, age_seconds=1)

    worker = await _run_until_idle(database, settings, tiny_pipeline)
    assert worker.completed == 3

    jobs = {job_id: await _job(database, job_id) for job_id in (same_a, same_b, other)}
    assert all(job.status == JobStatus.SUCCEEDED for job in jobs.values())
    a, b, c = (jobs[i].images[0] for i in (same_a, same_b, other))
    assert np.array_equal(_pixels(a.path), _pixels(b.path))
    assert not np.array_equal(_pixels(a.path), _pixels(c.path))
    assert (a.width, a.height) == (64, 64) and a.size_bytes == Path(a.path).stat().st_size

    with Image.open(a.path) as image:
        parameters = json.loads(image.text["atelier"])
    assert parameters["member_prompt"] == "a lighthouse on a cliff"
    assert parameters["seed"] == 42 and parameters["steps"] == 2
    assert (parameters["width"], parameters["height"]) == (64, 64)
    assert parameters["model"] == "atelier/tiny-sd"
    assert jobs[same_a].gpu_seconds and jobs[same_a].gpu_seconds > 0


async def test_a_job_that_cannot_run_fails_alone_with_its_error(
    database: Database, settings: Settings, tiny_pipeline
) -> None:  # type: ignore[no-untyped-def]
    good = await add_job(database, seed=1, age_seconds=2)
    bad = await add_job(database, seed=2, age_seconds=1, width=60)  # not a multiple of 8: diffusers refuses
    await _run_until_idle(database, settings, tiny_pipeline)
    assert (await _job(database, good)).status == JobStatus.SUCCEEDED
    failed = await _job(database, bad)
    assert failed.status == JobStatus.FAILED
    assert failed.error and "ValueError" in failed.error
    assert failed.attempts == 1  # bad parameters are not retried


def _engine(settings_env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    # Logs go to a file: an unread pipe would fill up and stall the engine.
    log_path = Path(settings_env["ATELIER_DATA_DIR"]) / "engine-test.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "engine", "--tiny", *extra],
            env=settings_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def _wait_status(db: Database, job_id: str, statuses: set[str], timeout: float = 120) -> Job:
    async with asyncio.timeout(timeout):
        while (job := await _job(db, job_id)).status not in statuses:
            await asyncio.sleep(0.05)
    return job


@pytest.mark.slow
async def test_engine_killed_mid_job_loses_nothing_and_runs_it_once_more(
    database: Database, settings: Settings, settings_env: dict[str, str]
) -> None:
    # Big enough that the tiny model needs several seconds, so the kill lands mid-generation.
    job_id = await add_job(database, width=256, height=256, steps=20)
    first = _engine(settings_env)
    try:
        await _wait_status(database, job_id, {"running"})
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()

    second = _engine(settings_env, "--idle-exit", "1")
    try:
        # A second start of torch and the model, then the whole job again: minutes on a loaded machine.
        job = await _wait_status(database, job_id, {"succeeded", "failed"}, timeout=240)
        assert second.wait(timeout=60) == 0
    finally:
        second.kill()
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 2  # the killed attempt counted; the job ran again from the queue
    assert len(job.images) == 1


@pytest.mark.slow
async def test_sigterm_lets_the_running_job_finish(
    database: Database, settings: Settings, settings_env: dict[str, str]
) -> None:
    job_id = await add_job(database, width=128, height=128, steps=10)
    # A grace period far longer than the job, so a busy machine cannot turn "finish" into "release".
    engine = _engine({**settings_env, "ATELIER_SHUTDOWN_GRACE_SECONDS": "120"})
    try:
        await _wait_status(database, job_id, {"running"})
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=120) == 0
    finally:
        engine.kill()
    job = await _job(database, job_id)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1


@pytest.mark.slow
async def test_sigterm_past_the_grace_period_releases_the_job(
    database: Database, settings: Settings, settings_env: dict[str, str]
) -> None:
    job_id = await add_job(database, width=256, height=256, steps=40)
    engine = _engine(settings_env)
    try:
        await _wait_status(database, job_id, {"running"})
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=120) == 0
    finally:
        engine.kill()
    job = await _job(database, job_id)
    # Released, not failed: back in the queue with the attempt given back.
    assert job.status == JobStatus.QUEUED and job.attempts == 0
