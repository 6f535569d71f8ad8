"""Dynamic batching with the tiny pipeline: same images as plain diffusers calls, faults stay contained."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bot.config import Settings
from bot.db.models import Job
from engine.contract import ClaimedJob, JobResult, JobSpec, JobStatus, PermanentJobError
from engine.pipelines.text_to_image import BatchOutput, TextToImage, attention_processors
from engine.queue.database import Database
from engine.queue.sqlite import SqliteQueue
from engine.serve import load_pipeline
from engine.worker import EngineWorker, WorkerConfig
from tests.factories import add_job

# Batched and single-image calls sum in different orders; after rounding to 8 bits that can move a
# pixel by one level, never more.
PIXEL_TOLERANCE = 1


@pytest.fixture(scope="module")
def tiny_pipeline(models_dir: Path) -> TextToImage:
    return load_pipeline(Settings(tiny=True, models_path=models_dir))


def _config(**overrides: Any) -> WorkerConfig:
    values: dict[str, Any] = {
        "max_batch": 4,
        "batch_wait_ms": 0.0,
        "heartbeat_seconds": 0.2,
        "poll_seconds": 0.02,
        "idle_exit_seconds": 0.2,
    }
    return WorkerConfig(**{**values, **overrides})


async def _run_until_idle(worker: EngineWorker) -> EngineWorker:
    await asyncio.wait_for(worker.run(), timeout=120)
    return worker


async def _job(db: Database, job_id: str) -> Job:
    async with db.sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _plain(pipeline: TextToImage, prompt: str, seed: int, **kwargs: Any) -> np.ndarray:
    """The reference: one plain diffusers call for one image."""
    result = pipeline.pipe(
        prompt=prompt,
        width=64,
        height=64,
        num_inference_steps=kwargs.pop("steps", 2),
        guidance_scale=kwargs.pop("guidance", 0.0),
        generator=torch.Generator("cpu").manual_seed(seed),
        **kwargs,
    )
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


class _Wrapped:
    """The real pipeline behind a fault that a test injects before a call reaches it."""

    def __init__(self, inner: TextToImage, fault: Callable[[Sequence[JobSpec]], None]) -> None:
        self.inner = inner
        self.model = inner.model
        self.fault = fault
        self.calls: list[int] = []

    def generate(self, jobs: Sequence[JobSpec], **kwargs: Any) -> BatchOutput:
        self.calls.append(len(jobs))
        self.fault(jobs)
        return self.inner.generate(jobs, **kwargs)


async def test_a_batch_gives_each_job_the_image_a_plain_call_gives_for_its_seed(
    database: Database, settings: Settings, tiny_pipeline: TextToImage
) -> None:
    # Two jobs share a prompt, so the batch also takes the shared-embeddings path.
    specs = [("a fox in the snow", 11), ("a fox in the snow", 12), ("a lighthouse on a cliff", 13), ("a red bird", 14)]
    ids = [await add_job(database, prompt=p, seed=s, user_id=i, age_seconds=4 - i) for i, (p, s) in enumerate(specs)]
    worker = await _run_until_idle(EngineWorker(SqliteQueue(database, settings), tiny_pipeline, _config()))
    assert worker.completed == 4 and worker.batches == 1  # one pipeline call for all four

    for job_id, (prompt, seed) in zip(ids, specs, strict=True):
        job = await _job(database, job_id)
        assert job.status == JobStatus.SUCCEEDED
        difference = np.abs(_pixels(job.images[0].path) - _plain(tiny_pipeline, prompt, seed))
        assert difference.max() <= PIXEL_TOLERANCE, (prompt, seed, difference.max())
    assert worker.progress == {}


def test_the_pipeline_runs_pytorch_fused_attention(tiny_pipeline: TextToImage) -> None:
    assert attention_processors(tiny_pipeline.pipe) == {"AttnProcessor2_0"}  # scaled_dot_product_attention


def test_shared_prompt_embeddings_give_the_plain_result_with_guidance(tiny_pipeline: TextToImage) -> None:
    jobs = [
        JobSpec("txt2img", "a castle", "a castle", "blurry", tiny_pipeline.model, 64, 64, 2, 5.0, seed)
        for seed in (21, 22, 23)
    ]
    embeddings = tiny_pipeline.shared_prompt_embeddings(["a castle"] * 3, ["blurry"] * 3, guided=True)
    assert embeddings is not None and embeddings["prompt_embeds"].shape[0] == 3
    assert tiny_pipeline.shared_prompt_embeddings(["a", "b"], None, guided=False) is None  # nothing repeats

    output = tiny_pipeline.generate(jobs)
    for job, images in zip(jobs, output.images, strict=True):
        with Image.open(io.BytesIO(images[0].png)) as image:
            batched = np.asarray(image.convert("RGB"), dtype=np.int16)
        plain = _plain(tiny_pipeline, "a castle", job.seed, guidance=5.0, negative_prompt="blurry")
        assert np.abs(batched - plain).max() <= PIXEL_TOLERANCE


async def test_out_of_memory_splits_the_batch_until_it_fits(
    database: Database, settings: Settings, tiny_pipeline: TextToImage
) -> None:
    def oom_above_one(jobs: Sequence[JobSpec]) -> None:
        if len(jobs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    pipeline = _Wrapped(tiny_pipeline, oom_above_one)
    ids = [await add_job(database, seed=30 + i, user_id=i, age_seconds=4 - i) for i in range(4)]
    worker = await _run_until_idle(EngineWorker(SqliteQueue(database, settings), pipeline, _config()))  # type: ignore[arg-type]

    assert pipeline.calls == [4, 2, 1, 1, 2, 1, 1]  # halved, then halved again
    for i, job_id in enumerate(ids):
        job = await _job(database, job_id)
        assert job.status == JobStatus.SUCCEEDED and job.attempts == 1
        assert np.abs(_pixels(job.images[0].path) - _plain(tiny_pipeline, "a fox in the snow", 30 + i)).max() <= 1
    assert worker.completed == 4


async def test_a_job_that_fails_in_a_batch_fails_alone(
    database: Database, settings: Settings, tiny_pipeline: TextToImage
) -> None:
    def refuse_poison(jobs: Sequence[JobSpec]) -> None:
        if any("poison" in job.member_prompt for job in jobs):
            raise PermanentJobError("this prompt cannot be drawn")

    pipeline = _Wrapped(tiny_pipeline, refuse_poison)
    good = [await add_job(database, seed=40 + i, user_id=i, age_seconds=5 - i) for i in range(2)]
    bad = await add_job(database, prompt="poison apple", seed=49, user_id=9, age_seconds=1)
    await _run_until_idle(EngineWorker(SqliteQueue(database, settings), pipeline, _config()))  # type: ignore[arg-type]

    assert pipeline.calls == [3, 1, 1, 1]  # the batch, then each job alone
    assert [(await _job(database, job_id)).status for job_id in good] == [JobStatus.SUCCEEDED] * 2
    failed = await _job(database, bad)
    assert failed.status == JobStatus.FAILED and failed.attempts == 1
    assert failed.error == "this prompt cannot be drawn"


async def test_the_worker_waits_for_compatible_jobs_to_fill_a_batch(
    database: Database, settings: Settings, tiny_pipeline: TextToImage
) -> None:
    # Two jobs found together: a burst is arriving, so the engine gathers more before it runs.
    first = [await add_job(database, seed=50), await add_job(database, seed=51, user_id=2)]
    # A generous window: the batch closes as soon as it is full, so the test never waits it out.
    worker = EngineWorker(SqliteQueue(database, settings), tiny_pipeline, _config(batch_wait_ms=10_000))
    running = asyncio.create_task(worker.run())
    async with asyncio.timeout(60):
        while (await _job(database, first[0])).status != JobStatus.RUNNING:
            await asyncio.sleep(0.01)
    later = [await add_job(database, seed=52 + i, user_id=3 + i) for i in range(2)]
    await asyncio.wait_for(running, timeout=120)

    assert [(await _job(database, job_id)).status for job_id in [*first, *later]] == [JobStatus.SUCCEEDED] * 4
    assert worker.completed == 4 and worker.batches == 1


async def test_a_lone_job_on_an_idle_engine_runs_without_waiting_for_company(
    database: Database, settings: Settings, tiny_pipeline: TextToImage
) -> None:
    first = await add_job(database, seed=60)
    # The window would hold the lone job for ten seconds and take the second one in with it.
    worker = EngineWorker(SqliteQueue(database, settings), tiny_pipeline, _config(batch_wait_ms=10_000))
    running = asyncio.create_task(worker.run())
    async with asyncio.timeout(60):
        while (await _job(database, first)).status != JobStatus.RUNNING:
            await asyncio.sleep(0.01)
    second = await add_job(database, seed=61, user_id=2)
    await asyncio.wait_for(running, timeout=60)

    assert [(await _job(database, job_id)).status for job_id in (first, second)] == [JobStatus.SUCCEEDED] * 2
    assert worker.completed == 2 and worker.batches == 2


class _OrderQueue(SqliteQueue):
    """The SQLite queue, noting when a claim starts and when a batch's results are recorded."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.events: list[str] = []

    async def claim(self, *args: Any, **kwargs: Any) -> list[ClaimedJob]:
        self.events.append("claim")
        return await super().claim(*args, **kwargs)

    async def complete_many(self, results: list[tuple[ClaimedJob, JobResult]]) -> list[bool]:
        done = await super().complete_many(results)
        self.events.append("recorded")
        return done


async def test_a_lone_job_on_an_idle_engine_is_recorded_before_the_engine_looks_again(
    database: Database, settings: Settings, tiny_pipeline: TextToImage
) -> None:
    # The look would run beside the recording on the engine's event loop, and on an idle server find
    # nothing: the member's image would wait for it.
    await add_job(database, seed=62)
    queue = _OrderQueue(database, settings)
    await _run_until_idle(EngineWorker(queue, tiny_pipeline, _config()))
    assert queue.events[:3] == ["claim", "recorded", "claim"]


class _ProgressQueue(SqliteQueue):
    """The SQLite queue, noting each progress report it stores."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reports: list[tuple[str, int]] = []

    async def progress(self, job: ClaimedJob, step: int) -> None:
        self.reports.append((job.id, step))
        await super().progress(job, step)


async def test_progress_is_reported_per_job_and_step(
    database: Database, settings: Settings, tiny_pipeline: TextToImage
) -> None:
    ids = [await add_job(database, seed=60 + i, steps=3, user_id=i, age_seconds=2 - i) for i in range(2)]
    queue = _ProgressQueue(database, settings)
    seen: list[dict[str, tuple[int, int]]] = []

    class Watching(_Wrapped):
        def generate(self, jobs: Sequence[JobSpec], **kwargs: Any) -> BatchOutput:
            on_step = kwargs.pop("on_step")

            def step(done: int, total: int) -> None:
                on_step(done, total)
                time.sleep(0.05)  # let the loop take the step in before the next one
                seen.append(dict(worker.progress))

            return super().generate(jobs, on_step=step, **kwargs)

    worker = EngineWorker(queue, Watching(tiny_pipeline, lambda jobs: None), _config(progress_interval_seconds=0.0))  # type: ignore[arg-type]
    await _run_until_idle(worker)
    assert seen[-1] == {job_id: (3, 3) for job_id in ids}  # "step n of m" per job, for the bot
    assert worker.progress == {}  # forgotten once settled
    # Step 1 of 3 for each job at least (a later step is dropped while an earlier write is still under
    # way); never the last step, which the job's completion tells.
    for job_id in ids:
        steps = [step for reported, step in queue.reports if reported == job_id]
        assert steps[0] == 1 and set(steps) <= {1, 2} and steps == sorted(steps)


async def test_jobs_waiting_behind_another_group_keep_their_leases(
    database: Database, settings: Settings, tiny_pipeline: TextToImage
) -> None:
    settings.lease_seconds = 0.6
    slow_started = threading.Event()

    def slow_first_group(jobs: Sequence[JobSpec]) -> None:
        if jobs[0].width == 64:
            slow_started.set()
            time.sleep(1.5)  # well past the lease of the job waiting behind it

    pipeline = _Wrapped(tiny_pipeline, slow_first_group)
    first = await add_job(database, seed=70, age_seconds=2)
    waiting = await add_job(database, seed=71, width=32, height=32, user_id=2, age_seconds=1)
    queue = SqliteQueue(database, settings)
    running = asyncio.create_task(EngineWorker(queue, pipeline, _config(heartbeat_seconds=0.1)).run())  # type: ignore[arg-type]
    await asyncio.to_thread(slow_started.wait, 30)
    await asyncio.sleep(1.0)
    # Another engine looking for work finds nothing: the waiting job's lease was renewed.
    assert await queue.claim("another-engine", limit=4, models=[tiny_pipeline.model]) == []
    await asyncio.wait_for(running, timeout=120)
    for job_id in (first, waiting):
        job = await _job(database, job_id)
        assert job.status == JobStatus.SUCCEEDED and job.attempts == 1


def test_image_to_image_jobs_start_from_their_source_image(tmp_path: Path, tiny_pipeline: TextToImage) -> None:
    source = tmp_path / "source.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(source)
    base = JobSpec("txt2img", "a fox", "a fox", "", tiny_pipeline.model, 64, 64, 2, 0.0, 80)
    variation = JobSpec(**{**base.to_dict(), "kind": "img2img", "init_image": str(source), "strength": 0.5})
    steps: list[tuple[int, int]] = []

    def decode(output: BatchOutput) -> np.ndarray:
        with Image.open(io.BytesIO(output.images[0][0].png)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.int16)

    text = decode(tiny_pipeline.generate([base]))
    first = decode(tiny_pipeline.generate([variation], on_step=lambda s, t: steps.append((s, t))))
    again = decode(tiny_pipeline.generate([variation]))
    assert np.array_equal(first, again)  # seeded
    assert not np.array_equal(first, text)  # not a text-to-image run in disguise
    assert steps and steps[-1][0] == steps[-1][1] == 2  # the steps the job asked for


def test_bench_runs_the_engine_against_plain_calls(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path
) -> None:
    import argparse

    from engine.bench import add_bench_engine_arguments, run_bench_engine

    monkeypatch.setenv("ATELIER_MODELS_PATH", str(models_dir))
    monkeypatch.setenv("ATELIER_CLAIM_POLL_SECONDS", "0.05")
    parser = argparse.ArgumentParser()
    add_bench_engine_arguments(parser)
    args = parser.parse_args(["--tiny", "--requests", "4", "--max-batch", "4", "--rounds", "1", "--json"])
    args.data_dir = str(tmp_path)
    assert run_bench_engine(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["requests"] == 4 and report["max_batch"] == 4 and report["arch"] == "tiny"
    assert report["failed"] == 0 and report["max_abs_diff"] <= PIXEL_TOLERANCE
    for key in ("baseline_images_per_s", "engine_images_per_s", "speedup", "p50_ms", "p95_ms", "device"):
        assert key in report


def _tiny_sdxl(tmp_path: Path) -> Any:
    """A miniature of the default model's pipeline class: two text encoders and pooled embeddings."""
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from engine.tiny import write_clip_tokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path / "tokenizer"))
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop ids and the pooled text embedding
        cross_attention_dim=64,  # both encoders' hidden states side by side
        norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text_config),
        text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
        ),
        add_watermarker=False,
    )


@pytest.mark.parametrize("guidance", [0.0, 3.0])
def test_an_sdxl_batch_with_shared_prompts_matches_plain_calls(tmp_path: Path, guidance: float) -> None:
    pipeline = TextToImage("sdxl-mini", _tiny_sdxl(tmp_path), device="cpu", dtype="float32")
    jobs = [JobSpec("txt2img", "a fox", "a fox", "", "sdxl-mini", 64, 64, 2, guidance, seed) for seed in (1, 2, 3)]
    assert pipeline.shared_prompt_embeddings(["a fox"] * 3, None, guided=guidance > 1) is not None
    output = pipeline.generate(jobs)
    for job, images in zip(jobs, output.images, strict=True):
        with Image.open(io.BytesIO(images[0].png)) as image:
            batched = np.asarray(image.convert("RGB"), dtype=np.int16)
        plain = _plain(pipeline, "a fox", job.seed, guidance=guidance)
        assert np.abs(batched - plain).max() <= PIXEL_TOLERANCE
