"""`atelier bench engine`: the engine's batched throughput, side by side with plain diffusers calls.

One run, one pipeline object, the same jobs twice:

- baseline: one plain ``pipe(...)`` call per job, one after the other, as a script without an engine would;
- engine: the jobs arrive as a burst through the real SQLite queue (a fresh database in a temporary
  directory) and an in-process EngineWorker with dynamic batching claims, generates, writes PNGs and
  records them, exactly as `atelier engine` does.

Every image is compared pixel by pixel with the baseline image of the same seed. The result is JSON;
nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.compute import call_compute
from engine.contract import JobSpec
from engine.queue.sqlite import SqliteQueue
from engine.timing import peak_memory, percentile, reset_peak_memory

if TYPE_CHECKING:
    from engine.config import EngineSettings
    from engine.contract import ClaimedJob, JobResult
    from engine.pipelines.text_to_image import TextToImage
    from engine.queue.database import Database

log = logging.getLogger(__name__)

_SUBJECTS = (
    "a fox in the snow",
    "a lighthouse on a cliff",
    "an old robot reading a book",
    "a dragon over a medieval city",
    "a cat asleep on a windowsill",
    "a sailing ship in a storm",
    "a neon street at night",
    "a mountain lake at dawn",
    "a portrait of an old fisherman",
    "a garden of glowing flowers",
    "a train crossing a bridge",
    "a castle in the clouds",
)
_STYLES = ("watercolor", "cinematic lighting", "oil painting", "pixel art", "photograph, sharp focus", "ink sketch")


def _add_once(parser: argparse.ArgumentParser, *flags: str, **kwargs: Any) -> None:
    # The CLI's shared options (--tiny, --data-dir) may already be on the parser.
    if not any(flag in parser._option_string_actions for flag in flags):
        parser.add_argument(*flags, **kwargs)


def add_bench_engine_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.pipelines.registry import ARCHITECTURES
    from engine.pipelines.speedups import UNET_CACHES, UNET_QUANTIZATIONS
    from engine.worker import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH

    _add_once(parser, "--tiny", action="store_true", help="the offline tiny model (the default without --arch)")
    _add_once(parser, "--data-dir", help="where models are kept (overrides ATELIER_DATA_DIR)")
    parser.add_argument("--arch", choices=ARCHITECTURES, help="a real architecture (hub id, or --random-weights)")
    parser.add_argument(
        "--random-weights", action="store_true", help="build --arch from its shipped configs with random weights"
    )
    parser.add_argument("--requests", type=int, default=16, help="jobs in the burst (default 16)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="jobs per pipeline call at most")
    parser.add_argument(
        "--batch-wait-ms", type=float, default=DEFAULT_BATCH_WAIT_MS, help="how long to wait for a batch to fill"
    )
    parser.add_argument("--size", help="SIDE or WIDTHxHEIGHT (default: the model's usual size; 64 for --tiny)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's usual)")
    parser.add_argument("--guidance", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=1, help="images per job (a grid)")
    parser.add_argument(
        "--prompts", type=int, default=0, help="distinct prompts among the jobs (default: each job its own)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the UNet (its compilation shows in warmup_s)"
    )
    parser.add_argument(
        "--compile-mode",
        default="max-autotune-no-cudagraphs",
        help="torch.compile mode (default: max-autotune-no-cudagraphs; 'default' compiles in far less time)",
    )
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default: inductor)")
    parser.add_argument(
        "--unet-quantization",
        choices=UNET_QUANTIZATIONS,
        default="none",
        help="also time a second pipeline with the UNet quantized (torchao), against the plain one",
    )
    parser.add_argument(
        "--unet-cache",
        choices=UNET_CACHES,
        default="none",
        help="also time a second pipeline with this UNet cache, against the plain one",
    )
    parser.add_argument("--rounds", type=int, default=5, help="paired baseline and engine passes (medians reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--engines", help="comma-separated engine process counts (e.g. 1,2,3): throughput as engines are added"
    )
    parser.add_argument(
        "--quality",
        action="store_true",
        help="also measure the preference scorer on and off and the cost of an explanation (engine/bench_quality.py)",
    )


@dataclass
class BenchSpec:
    model: str
    arch: str
    width: int
    height: int
    steps: int
    guidance: float
    requests: int
    count: int = 1
    distinct_prompts: int = 0
    max_batch: int = 8
    batch_wait_ms: float = 50.0

    def jobs(self) -> list[JobSpec]:
        distinct = self.distinct_prompts or self.requests
        prompts = [f"{_SUBJECTS[i % len(_SUBJECTS)]}, {_STYLES[i % len(_STYLES)]}, study {i}" for i in range(distinct)]
        return [
            JobSpec(
                kind="txt2img",
                member_prompt=prompts[i % distinct],
                model_prompt=prompts[i % distinct],
                negative_prompt="",
                model=self.model,
                width=self.width,
                height=self.height,
                steps=self.steps,
                guidance=self.guidance,
                seed=1000 + i * max(1, self.count),
                count=self.count,
            )
            for i in range(self.requests)
        ]


def _parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height or width)


def run_bench_engine(args: argparse.Namespace) -> int:
    if getattr(args, "engines", None):
        from engine.bench_engines import run_bench_engines

        return run_bench_engines(args)
    from engine.config import TINY_MODEL, EngineSettings
    from engine.pipelines.registry import architecture, build_random_pipeline, pick_device, resolve_model
    from engine.pipelines.text_to_image import PipelineOptions, TextToImage
    from engine.serve import quiet_model_libraries

    quiet_model_libraries()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.arch and args.tiny:
        print("error: --tiny and --arch are exclusive", file=sys.stderr)
        return 2
    if args.random_weights and not args.arch:
        print("error: --random-weights needs --arch", file=sys.stderr)
        return 2
    base = EngineSettings(**({"data_dir": Path(args.data_dir)} if args.data_dir else {}))
    if args.arch:
        spec = architecture(args.arch)
        model, arch, side, steps = spec["hub_id"], args.arch, spec["default_side"], spec["default_steps"]
    else:
        model, arch, side, steps = TINY_MODEL, "tiny", 64, 2
    width, height = _parse_size(args.size) if args.size else (side, side)
    bench = BenchSpec(
        model=model,
        arch=arch,
        width=width,
        height=height,
        steps=args.steps or steps,
        guidance=args.guidance,
        requests=args.requests,
        count=args.count,
        distinct_prompts=args.prompts,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
    )
    device, dtype = pick_device(args.device, args.dtype)
    if args.random_weights:
        source: Any = call_compute(build_random_pipeline, args.arch, device=device, dtype=dtype)
    elif args.arch:
        source = model
    else:
        base.ensure_dirs()
        source = resolve_model(TINY_MODEL, base.models_dir)
    options = PipelineOptions(
        warmup_side=min(width, height),
        compile_unet=args.compile,
        compile_mode=None if args.compile_mode == "default" else args.compile_mode,
        compile_backend=args.compile_backend,
    )
    pipeline = call_compute(
        TextToImage, model, source, device=str(device), dtype=str(dtype).removeprefix("torch."), options=options
    )
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as scratch:
        settings = EngineSettings(data_dir=Path(scratch), models_path=base.models_dir)
        report = run_bench(pipeline, bench, settings, rounds=args.rounds)
    if args.unet_quantization != "none" or args.unet_cache != "none":
        from engine.bench_speedups import compare_speedup

        # A second pipeline from the same weights (the random ones are seeded), with the speed-up.
        if args.random_weights:
            source = call_compute(build_random_pipeline, args.arch, device=device, dtype=dtype)
        fast_options = dataclasses.replace(
            options, unet_quantization=args.unet_quantization, unet_cache=args.unet_cache
        )
        fast = call_compute(
            TextToImage,
            model,
            source,
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            options=fast_options,
        )
        report["unet_speedup"] = call_compute(compare_speedup, pipeline, fast, bench.jobs(), rounds=args.rounds)
    if args.quality:
        report["quality"] = call_compute(_quality, pipeline, bench, base, args, device, dtype)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>22}: {value}")
    return 0


def _quality(
    pipeline: TextToImage, bench: BenchSpec, base: EngineSettings, args: argparse.Namespace, device: Any, dtype: Any
) -> dict[str, Any]:
    from engine.bench_quality import quality_report, random_pickscore
    from engine.pipelines.scorer import load_scorer

    if args.random_weights:
        scorer = random_pickscore(device, dtype)
    else:
        choice = "tiny" if not args.arch else base.scorer_model
        scorer = load_scorer(choice, base.scorer_processor, base.models_dir, device=device, dtype=dtype)
    jobs = bench.jobs()[: bench.max_batch]
    return quality_report(pipeline, scorer, jobs, rounds=args.rounds)


def run_bench(pipeline: TextToImage, bench: BenchSpec, settings: EngineSettings, *, rounds: int = 5) -> dict[str, Any]:
    """Warm both paths, then ``rounds`` times: the baseline, then the same jobs through the engine.

    Rates are medians over the rounds, latencies are pooled: a shared machine's noise then moves the
    result less than any single pass would. Every engine image is compared with its baseline image.
    """
    import numpy as np
    import torch

    from migrations import upgrade

    jobs = bench.jobs()
    reset_peak_memory()
    # Warm-up for both paths at the measured shapes: a long-running process would be warm too. Its cost
    # is reported: a compiled UNet must earn it back.
    started = time.perf_counter()
    call_compute(_plain_call, pipeline, jobs[0])
    call_compute(pipeline.generate, jobs[: min(bench.max_batch, len(jobs))])
    warmup_seconds = getattr(pipeline, "warmup_seconds", 0.0) + time.perf_counter() - started
    settings.ensure_dirs()
    asyncio.run(upgrade(settings.db_url))
    submitter = _Submitter(settings.db_url)

    baseline_rates: list[float] = []
    engine_rates: list[float] = []
    baseline_latencies: list[float] = []
    engine_latencies: list[float] = []
    batches: list[int] = []
    failed = 0
    max_abs_diff = 0
    images = len(jobs) * bench.count
    try:
        for round_index in range(max(1, rounds)):
            # On the compute thread, as the engine's calls are: both paths run under the same threading.
            plain, latencies, seconds = call_compute(_plain_pass, pipeline, jobs)
            baseline_latencies += latencies
            baseline_rates.append(images / seconds)
            expected = [[np.asarray(image, dtype=np.int16) for image in outputs] for outputs in plain]

            engine = asyncio.run(_engine_burst(pipeline, jobs, bench, settings, submitter, phase_seed=round_index))
            engine_rates.append(images / engine.seconds)
            engine_latencies += engine.latencies
            batches.append(engine.batches)
            failed += engine.failed
            for arrays, paths in zip(expected, engine.paths, strict=True):
                if len(paths) != len(arrays):
                    max_abs_diff = 255  # a missing image is as different as an image can be
                for array, path in zip(arrays, paths, strict=False):
                    max_abs_diff = max(max_abs_diff, int(np.abs(_pixels(path) - array).max()))
    finally:
        submitter.close()

    # Each round pairs a baseline pass with the engine pass right after it, so the ratio within a round
    # cancels slow drifts of a shared machine; the median over rounds drops the outliers.
    speedups = [engine / baseline for engine, baseline in zip(engine_rates, baseline_rates, strict=True)]
    return {
        "baseline_images_per_s": round(float(np.median(baseline_rates)), 3),
        "engine_images_per_s": round(float(np.median(engine_rates)), 3),
        "speedup": round(float(np.median(speedups)), 3),
        "p50_ms": _percentile_ms(engine_latencies, 50),
        "p95_ms": _percentile_ms(engine_latencies, 95),
        "max_abs_diff": max_abs_diff,
        "requests": len(jobs),
        "max_batch": bench.max_batch,
        "device": str(pipeline.device),
        "arch": bench.arch,
        # Context for reading the numbers above.
        "baseline_p50_ms": _percentile_ms(baseline_latencies, 50),
        "baseline_p95_ms": _percentile_ms(baseline_latencies, 95),
        "speedup_per_round": [round(speedup, 3) for speedup in speedups],
        "rounds": len(engine_rates),
        "batch_wait_ms": bench.batch_wait_ms,
        "batches_per_round": batches,
        "images": images,
        "size": f"{bench.width}x{bench.height}",
        "steps": bench.steps,
        "guidance": bench.guidance,
        "distinct_prompts": bench.distinct_prompts or len(jobs),
        "dtype": str(pipeline.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "poll_seconds": settings.claim_poll_seconds,
        "warmup_s": round(warmup_seconds, 2),
        "compiled_unet": pipeline.options.compile_unet,
        "compile": _compile_description(pipeline.options),
        "failed": failed,
        # Peaks over warm-up and every round, both paths (the baseline's batch is 1, the engine's up to max_batch).
        **peak_memory(),
    }


def _compile_description(options: Any) -> str | None:
    if not options.compile_unet:
        return None
    if options.compile_backend != "inductor":
        return options.compile_backend
    return f"inductor, {options.compile_mode or 'default'}"


def _percentile_ms(seconds: list[float], q: float) -> float:
    return round(percentile(seconds, q) * 1000, 1)


def _plain_pass(pipeline: TextToImage, jobs: list[JobSpec]) -> tuple[list[list[Any]], list[float], float]:
    """The baseline: the jobs one after the other; their images, latencies and the total time."""
    plain: list[list[Any]] = []
    latencies: list[float] = []
    started = time.perf_counter()
    for job in jobs:
        plain.append(_plain_call(pipeline, job))
        # Every request of the burst arrived at the start; each waits for the ones before it.
        latencies.append(time.perf_counter() - started)
    return plain, latencies, time.perf_counter() - started


def _plain_call(pipeline: TextToImage, job: JobSpec) -> list[Any]:
    """What a script without an engine does: one pipeline call for one request."""
    import torch

    generators = [torch.Generator("cpu").manual_seed(seed) for seed in job.seeds]
    result = pipeline.pipe(
        prompt=job.model_prompt,
        negative_prompt=job.negative_prompt or None,
        width=job.width,
        height=job.height,
        num_inference_steps=job.steps,
        guidance_scale=job.guidance,
        num_images_per_prompt=job.count,
        generator=generators if job.count > 1 else generators[0],
    )
    return list(result.images)


def _pixels(path: str) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@dataclass
class _EngineRun:
    seconds: float
    latencies: list[float]
    paths: list[list[str]]
    batches: int
    failed: int


class _TimedQueue(SqliteQueue):
    """The real SQLite queue, noting when each job is settled so latencies need no database polling."""

    def __init__(self, database: Database, settings: EngineSettings, expected: int) -> None:
        super().__init__(database, settings)
        self.settled_at: dict[str, float] = {}
        self.failed: set[str] = set()
        self.expected = expected
        self.all_settled = asyncio.Event()

    def _settle(self, job_id: str) -> None:
        self.settled_at.setdefault(job_id, time.monotonic())
        if len(self.settled_at) >= self.expected:
            self.all_settled.set()

    async def complete_many(self, results: list[tuple[ClaimedJob, JobResult]]) -> list[bool]:
        done = await super().complete_many(results)
        for job, _ in results:
            self._settle(job.id)
        return done

    async def fail(self, job: ClaimedJob, error: str, *, retryable: bool = True) -> str:
        status = await super().fail(job, error, retryable=retryable)
        if status != "queued":
            self.failed.add(job.id)
            self._settle(job.id)
        return status


async def _engine_burst(
    pipeline: TextToImage,
    jobs: list[JobSpec],
    bench: BenchSpec,
    settings: EngineSettings,
    submitter: _Submitter,
    *,
    phase_seed: int,
) -> _EngineRun:
    from sqlalchemy import select

    from engine.queue.database import Database
    from engine.queue.ledger import images
    from engine.worker import EngineWorker, WorkerConfig

    database = Database(settings.db_url)
    queue = _TimedQueue(database, settings, expected=len(jobs))
    worker = EngineWorker(
        queue,
        pipeline,
        WorkerConfig(
            max_batch=bench.max_batch,
            batch_wait_ms=bench.batch_wait_ms,
            heartbeat_seconds=settings.heartbeat_seconds,
            poll_seconds=settings.claim_poll_seconds,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
        ),
    )
    running = asyncio.create_task(worker.run())
    ids = [uuid.uuid4().hex for _ in jobs]
    try:
        # The burst finds an idle engine somewhere in its polling cycle, as in production; a seeded
        # offset so that rounds sample the cycle rather than always hitting the same point of it.
        phase = random.Random(phase_seed).uniform(0.0, settings.claim_poll_seconds)
        await asyncio.sleep(max(0.3, settings.claim_poll_seconds) + phase)
        submitter.send_burst(
            [(job_id, i + 1, job.to_dict()) for i, (job_id, job) in enumerate(zip(ids, jobs, strict=True))]
        )
        await asyncio.wait_for(queue.all_settled.wait(), timeout=max(600.0, 30.0 * len(jobs)))
        enqueued = await asyncio.to_thread(submitter.enqueue_times)
        seconds = max(queue.settled_at.values()) - min(enqueued.values())
        latencies = [queue.settled_at[job_id] - enqueued[job_id] for job_id in ids]
    finally:
        worker.request_stop()
        await running
    async with database.sessions() as session:
        rows = (await session.execute(select(images).where(images.c.job_id.in_(ids)))).all()
    await database.dispose()
    by_job: dict[str, list[Any]] = {}
    for row in rows:
        by_job.setdefault(row.job_id, []).append(row)
    paths = [[row.path for row in sorted(by_job.get(job_id, []), key=lambda r: r.index)] for job_id in ids]
    return _EngineRun(seconds, latencies, paths, worker.batches, len(queue.failed))


class _Submitter:
    """A process of its own standing in for the bot: members' requests are written by another process
    than the engine's, so they compete for the database but not for the engine's interpreter."""

    def __init__(self, db_url: str) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from engine.bench import submitter_main; submitter_main(sys.argv[1])",
                db_url,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        if self._read() != "ready":
            raise RuntimeError("the submitter process did not start")

    def _read(self) -> Any:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the submitter process ended (exit status {self._process.poll()})")
        return json.loads(line)

    def send_burst(self, rows: list[tuple[str, int, dict[str, Any]]]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(rows) + "\n")
        self._process.stdin.flush()

    def enqueue_times(self) -> dict[str, float]:
        """When each job's enqueue began, on the machine-wide monotonic clock."""
        return self._read()

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()  # end of input: the submitter exits
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


def submitter_main(db_url: str) -> None:
    """The submitter process: one burst per line of JSON on stdin, enqueue times back on stdout."""
    asyncio.run(_submit_bursts(db_url))


async def _submit_bursts(db_url: str) -> None:
    from sqlalchemy import text

    from engine.queue.database import Database

    database = Database(db_url)
    async with database.transaction() as session:
        await session.execute(text("SELECT 1"))  # connect before the clock starts
    print(json.dumps("ready"), flush=True)
    while line := await asyncio.to_thread(sys.stdin.readline):
        enqueued: dict[str, float] = {}
        # Concurrently, as members' requests arrive: each is its own transaction.
        await asyncio.gather(
            *(
                _enqueue(database, job_id, user_id, JobSpec.from_dict(params), enqueued)
                for job_id, user_id, params in json.loads(line)
            )
        )
        print(json.dumps(enqueued), flush=True)
    await database.dispose()


async def _enqueue(database: Database, job_id: str, user_id: int, params: JobSpec, enqueued: dict[str, float]) -> None:
    """The row the bot writes when a member's request is accepted (quota and expansion are the bot's part)."""
    from sqlalchemy import BigInteger, Float, String, column, insert, table

    from engine.contract import JobStatus, utcnow
    from engine.queue.ledger import jobs

    # The queue's columns plus the request's own that have no default in the schema.
    requests = table(
        "jobs",
        *(column(c.name, c.type) for c in jobs.c),
        column("guild_id", BigInteger),
        column("expansion_source", String),
        column("compute_units", Float),
    )
    enqueued[job_id] = time.monotonic()
    now = utcnow()
    async with database.transaction() as session:
        await session.execute(
            insert(requests).values(
                id=job_id,
                guild_id=1,
                expansion_source="raw",
                compute_units=params.compute_units,
                # One member per request: a burst from many members, as on a busy server.
                user_id=user_id,
                **params.to_dict(),
                status=JobStatus.QUEUED,
                attempts=0,
                max_attempts=3,
                cancel_requested=False,
                created_at=now,
                available_at=now,
            )
        )
