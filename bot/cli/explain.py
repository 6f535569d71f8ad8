"""`atelier explain JOB`: re-run one image of a finished job while recording where the model looked
for each of the member's words; write the heatmap grid and print what made the image."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.cli.wiring import Services, print_json, settings_from, with_services
from bot.errors import InvalidRequest
from bot.services.records import JobRecord


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("explain", help="why an image looks as it does: provenance and per-word heatmaps")
    common(p)
    p.add_argument("job_id")
    p.add_argument("--index", type=int, default=0, help="which image of the grid (0 is the best-scored)")
    p.add_argument("--out", help="directory for the heatmap grid (default: DATA_DIR/explain)")
    p.add_argument("--json", action="store_true", help="one line of JSON (the default is indented JSON)")
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from bot.services.explain import explain_spec, provenance

    found: list[JobRecord] = []

    async def fetch(services: Services) -> int:
        found.append(await services.jobs.get(args.job_id.strip()))
        return 0

    asyncio.run(with_services(args, fetch))
    job = found[0]
    summary = provenance(job, args.index)
    spec = explain_spec(job, args.index)
    settings = settings_from(args)
    if settings.tiny and job.model != settings.image_model:
        raise InvalidRequest(f"job {job.id} was drawn with {job.model}; --tiny explains tiny-model jobs only")
    original = Path(job.images[args.index].path)
    try:
        original_png = original.read_bytes()
    except OSError:
        raise InvalidRequest(f"the image {original} is gone (pruned?); nothing to compare the re-run with") from None
    explanation = _explain(settings, spec, original_png)
    out = Path(args.out) if args.out else settings.data_dir / "explain"
    out.mkdir(parents=True, exist_ok=True)
    grid = out / f"{job.id}-{args.index}-heatmaps.png"
    grid.write_bytes(explanation.grid_png)
    report = {**summary, **explanation.summary(), "heatmaps": str(grid)}
    if args.json:
        print_json(report)
    else:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


def _explain(settings: Any, spec: Any, original_png: bytes) -> Any:
    from engine.explain import explain_image
    from engine.pipelines.registry import resolve_model
    from engine.pipelines.text_to_image import PipelineOptions, TextToImage
    from engine.serve import quiet_model_libraries

    quiet_model_libraries()
    pipeline = TextToImage(
        spec.model,
        resolve_model(spec.model, settings.models_dir),
        device=settings.device,
        dtype=settings.dtype,
        options=PipelineOptions(warmup=False),
    )
    return explain_image(pipeline, spec, original_png=original_png)
