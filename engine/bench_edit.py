"""`atelier bench edit`: edits through the engine, side by side with plain pipeline calls, and the
latency of a description.

One run, one set of loaded models, the same jobs twice:

- baseline: one plain ``StableDiffusionInstructPix2PixPipeline`` call per edit, one after the other;
- engine: the edits arrive as a burst through the real SQLite queue and an in-process EngineWorker,
  which batches them, writes PNGs and records them, as `atelier engine` does.

Every engine image is compared with the baseline image of the same seed. Region repairs (CLIPSeg mask,
inpainting, compositing) and descriptions (BLIP) run through the engine too; their rates and latencies
are reported beside. The result is JSON; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.bench import BenchSpec, _engine_burst, _percentile_ms, _pixels, _Submitter
from engine.compute import call_compute
from engine.contract import JobSpec

log = logging.getLogger(__name__)

EDIT_ARCHITECTURES = ("instruct-pix2pix",)


def add_bench_edit_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.bench import _add_once

    _add_once(parser, "--tiny", action="store_true", help="the offline tiny models (the default without --arch)")
    _add_once(parser, "--data-dir", help="where models are kept (overrides ATELIER_DATA_DIR)")
    parser.add_argument(
        "--arch", choices=EDIT_ARCHITECTURES, help="the real architectures with random weights (for a GPU)"
    )
    parser.add_argument("--requests", type=int, default=8, help="edits in the burst (default 8)")
    parser.add_argument("--max-batch", type=int, default=8, help="jobs per pipeline call at most")
    parser.add_argument("--batch-wait-ms", type=float, default=50.0)
    parser.add_argument("--size", type=int, help="image side (default 64 tiny, 512 with --arch)")
    parser.add_argument("--steps", type=int, help="denoising steps (default 2 tiny, 20 with --arch)")
    parser.add_argument("--rounds", type=int, default=3, help="paired baseline and engine passes (medians)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_bench_edit(args: argparse.Namespace) -> int:
    import sys

    from engine.config import TINY_MODEL, EngineSettings
    from engine.pipelines.registry import pick_device, resolve_model
    from engine.pipelines.tasks import ImageTasks, TaskModels, task_models
    from engine.pipelines.text_to_image import PipelineOptions, TextToImage
    from engine.serve import quiet_model_libraries

    quiet_model_libraries()
    if args.arch and args.tiny:
        print("error: --tiny and --arch are exclusive", file=sys.stderr)
        return 2
    base = EngineSettings(tiny=True, **({"data_dir": Path(args.data_dir)} if args.data_dir else {}))
    base.ensure_dirs()
    side = args.size or (512 if args.arch else 64)
    steps = args.steps or (20 if args.arch else 2)
    device, dtype = pick_device(args.device, args.dtype)
    with tempfile.TemporaryDirectory(prefix="atelier-bench-edit-") as scratch:
        scratch_dir = Path(scratch)
        if args.arch:
            from engine.tiny_edit import build_random_edit_models

            built = call_compute(build_random_edit_models, scratch_dir / "models")
            models = TaskModels(
                edit=built["edit"], mask=built["mask"], caption=built["caption"], inpaint=built["inpaint"]
            )
        else:
            models = task_models(base)
        # The text-to-image pipeline the engine wraps; the tiny one (edits never use it when an
        # inpainting model is configured, which both choices here do).
        text = call_compute(
            TextToImage,
            TINY_MODEL,
            resolve_model(TINY_MODEL, base.models_dir),
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            options=PipelineOptions(warmup=False),
        )
        pipeline = ImageTasks(text, models)
        source = scratch_dir / "source.png"
        _write_source(source, side)
        settings = EngineSettings(data_dir=scratch_dir / "data", models_path=base.models_dir)
        report = _run(pipeline, args, settings, source, side, steps)
    report.update(arch=args.arch or "tiny", device=str(device), dtype=str(dtype).removeprefix("torch."))
    report["max_abs_diff"] = int(report["max_abs_diff"])
    print(json.dumps(report) if args.json else "\n".join(f"{k:>24}: {v}" for k, v in report.items()))
    return 0


def _write_source(path: Path, side: int) -> None:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _jobs(
    kind: str, model: str, source: Path, side: int, steps: int, count: int, plan: dict[str, Any]
) -> list[JobSpec]:
    instructions = ("make it winter", "turn it into a watercolor", "make it night", "add autumn colours")
    return [
        JobSpec(
            kind=kind,
            member_prompt=instructions[i % len(instructions)],
            model_prompt=instructions[i % len(instructions)] if kind != "repair" else "fireworks",
            negative_prompt="",
            model=model,
            width=side,
            height=side,
            steps=steps,
            guidance=7.5 if kind != "describe" else 0.0,
            seed=2000 + i,
            init_image=str(source),
            plan=plan,
        )
        for i in range(count)
    ]


def _run(pipeline: Any, args: argparse.Namespace, settings: Any, source: Path, side: int, steps: int) -> dict[str, Any]:
    import numpy as np

    from migrations import upgrade

    model = pipeline.model
    edits = _jobs("edit", model, source, side, steps, args.requests, {"mode": "instruction", "image_guidance": 1.5})
    repairs = _jobs(
        "repair",
        model,
        source,
        side,
        steps,
        args.requests,
        # A threshold of 0 keeps every image's mask non-empty whatever random weights see; a repair's
        # cost does not depend on the mask's shape.
        {
            "mode": "repair",
            "action": "replace",
            "target": "the sky",
            "replacement": "fireworks",
            "mask": {"threshold": 0.0, "max_coverage": 1.0},
        },
    )
    describes = _jobs("describe", model, source, side, 1, args.requests, {})
    bench = BenchSpec(
        model, "edit", side, side, steps, 7.5, args.requests, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms
    )

    started = time.perf_counter()
    call_compute(_plain_edit, pipeline, edits[0])
    call_compute(pipeline.generate, edits[: args.max_batch])
    call_compute(pipeline.generate, repairs[:1])
    call_compute(pipeline.generate, describes[:1])
    warmup_seconds = time.perf_counter() - started
    settings.ensure_dirs()
    asyncio.run(upgrade(settings.db_url))
    submitter = _Submitter(settings.db_url)
    baseline_rates: list[float] = []
    engine_rates: list[float] = []
    repair_rates: list[float] = []
    describe_plain: list[float] = []
    describe_engine: list[float] = []
    max_abs_diff = 0
    failed = 0
    try:
        for round_index in range(max(1, args.rounds)):
            plain_started = time.perf_counter()
            expected = [call_compute(_plain_edit, pipeline, job) for job in edits]
            baseline_rates.append(len(edits) / (time.perf_counter() - plain_started))
            run = asyncio.run(_engine_burst(pipeline, edits, bench, settings, submitter, phase_seed=round_index))
            engine_rates.append(len(edits) / run.seconds)
            failed += run.failed
            for image, paths in zip(expected, run.paths, strict=True):
                if not paths:
                    max_abs_diff = 255
                    continue
                max_abs_diff = max(
                    max_abs_diff, int(np.abs(_pixels(paths[0]) - np.asarray(image, dtype=np.int16)).max())
                )
            repaired = asyncio.run(_engine_burst(pipeline, repairs, bench, settings, submitter, phase_seed=round_index))
            repair_rates.append(len(repairs) / repaired.seconds)
            failed += repaired.failed
            for job in describes[:2]:
                one = time.perf_counter()
                call_compute(pipeline.captioner().captions, [job])
                describe_plain.append(time.perf_counter() - one)
            described = asyncio.run(
                _engine_burst(pipeline, describes[:1], bench, settings, submitter, phase_seed=round_index)
            )
            describe_engine += described.latencies
            failed += described.failed
    finally:
        submitter.close()
    speedups = [engine / plain for engine, plain in zip(engine_rates, baseline_rates, strict=True)]
    return {
        "baseline_edits_per_s": round(float(np.median(baseline_rates)), 3),
        "engine_edits_per_s": round(float(np.median(engine_rates)), 3),
        "speedup": round(float(np.median(speedups)), 3),
        "engine_repairs_per_s": round(float(np.median(repair_rates)), 3),
        "describe_plain_p50_ms": _percentile_ms(describe_plain, 50),
        "describe_engine_p50_ms": _percentile_ms(describe_engine, 50),
        "max_abs_diff": max_abs_diff,
        "requests": args.requests,
        "max_batch": args.max_batch,
        "size": f"{side}x{side}",
        "steps": steps,
        "rounds": len(engine_rates),
        "speedup_per_round": [round(s, 3) for s in speedups],
        "warmup_s": round(warmup_seconds, 2),
        "failed": failed,
    }


def _plain_edit(pipeline: Any, job: JobSpec) -> Any:
    """What a script without an engine does: one InstructPix2Pix call for one request."""
    import torch
    from PIL import Image

    edit = pipeline.edit_pipeline()
    with Image.open(job.init_image) as opened:  # type: ignore[arg-type]
        image = opened.convert("RGB")
    result = edit.pipe(
        prompt=job.model_prompt,
        image=image,
        num_inference_steps=job.steps,
        guidance_scale=job.guidance,
        image_guidance_scale=(job.plan or {}).get("image_guidance", 1.5),
        generator=torch.Generator("cpu").manual_seed(job.seed),
    )
    return result.images[0]
