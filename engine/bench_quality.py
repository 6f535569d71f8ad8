"""`atelier bench engine --quality`: what scoring and explaining cost, against plain generation of the
same jobs on the same pipeline, in one run.

- scorer off / on: the same batch through the pipeline alone, then through the scoring wrapper
  (candidates decoded, one scorer pass over all of them); the overhead per image is the difference;
- explain: one image re-run with the recording attention processor against the same image drawn
  plainly, as a ratio, with whether the pixels matched.

Medians over rounds; peak accelerator memory when there is one. Nothing here asserts a speed.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.contract import JobSpec

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def random_pickscore(device: Any, dtype: Any) -> Any:
    """PickScore's real architecture (CLIP-H) with random weights and the tiny tokenizer: its speed
    without a download, as build_random_pipeline gives the image models'."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from engine.pipelines.scorer import PreferenceScorer
    from engine.tiny import clip_tokenizer, save_atomically

    spec = json.loads((CONFIGS_DIR / "pickscore.json").read_text())
    side = spec["image_size"]
    with tempfile.TemporaryDirectory(prefix="atelier-pickscore-") as scratch:
        out = Path(scratch) / "model"

        def write(tmp: Path) -> None:
            with torch.device(device):
                model = CLIPModel(CLIPConfig(**spec["config"]))
            model.save_pretrained(tmp)
            processor = CLIPProcessor(
                image_processor=CLIPImageProcessor(
                    size={"shortest_edge": side}, crop_size={"height": side, "width": side}
                ),
                tokenizer=clip_tokenizer(),
            )
            processor.save_pretrained(tmp)

        save_atomically(out, write)
        return PreferenceScorer(str(out), name=f"{spec['hub_id']} (random weights)", device=device, dtype=dtype)


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _paired(plain: Callable[[], Any], treated: Callable[[], Any], rounds: int) -> dict[str, Any]:
    """Each round times the plain call, then the treated one right after: the ratio within a round
    cancels a shared machine's drift, the median over rounds drops its outliers."""
    plain_times, treated_times, ratios = [], [], []
    result = None
    for _ in range(max(1, rounds)):
        plain_s, _ = _timed(plain)
        treated_s, result = _timed(treated)
        plain_times.append(plain_s)
        treated_times.append(treated_s)
        ratios.append(treated_s / plain_s)
    return {
        "plain_s": statistics.median(plain_times),
        "treated_s": statistics.median(treated_times),
        "ratio": statistics.median(ratios),
        "difference_s": statistics.median(t - p for t, p in zip(treated_times, plain_times, strict=True)),
        "result": result,
    }


def _peak_memory(device: Any) -> int | None:
    import torch

    if str(device).startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return None


def _reset_peak(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def quality_report(pipeline: Any, scorer: Any, jobs: list[JobSpec], *, rounds: int = 3) -> dict[str, Any]:
    """Scoring and explaining against plain generation, on ``pipeline`` (a TextToImage)."""
    from engine.explain import explain_image
    from engine.pipelines.scorer import ScoringPipeline

    plain_jobs = [replace(job, scoring=False) for job in jobs]
    scored_jobs = [replace(job, scoring=True, best_of=1) for job in jobs]
    scoring = ScoringPipeline(pipeline, scorer)
    images = sum(job.count for job in jobs)
    device = pipeline.device
    scoring.generate(scored_jobs)  # warm both paths at these shapes
    _reset_peak(device)
    plain_out = pipeline.generate(plain_jobs)
    plain_peak = _peak_memory(device)
    _reset_peak(device)
    scored = _paired(lambda: pipeline.generate(plain_jobs), lambda: scoring.generate(scored_jobs), rounds)
    scored_peak = _peak_memory(device)

    # The scorer alone on the same images: the part of the overhead that is the model itself.
    from engine.pipelines.scorer import _decode

    pictures = [_decode(image.png) for images in plain_out.images for image in images]
    prompts = [job.model_prompt for job in jobs for _ in range(job.count)]
    members = [job.member_prompt for job in jobs for _ in range(job.count)]
    scorer_times = [_timed(lambda: scorer.score(pictures, prompts, members))[0] for _ in range(max(1, rounds))]

    one = replace(plain_jobs[0], count=1)
    original = pipeline.generate([one]).images[0][0].png
    _reset_peak(device)
    explained = _paired(
        lambda: pipeline.generate([one]), lambda: explain_image(pipeline, one, original_png=original), rounds
    )
    explain_peak = _peak_memory(device)
    explanation = explained["result"]
    return {
        "scorer": scorer.name,
        "images": images,
        "scorer_off_s": round(scored["plain_s"], 4),
        "scorer_on_s": round(scored["treated_s"], 4),
        "scoring_overhead_ms_per_image": round(scored["difference_s"] / images * 1000, 2),
        "scoring_overhead_ratio": round(scored["ratio"], 3),
        "scorer_model_ms_per_image": round(statistics.median(scorer_times) / images * 1000, 2),
        "plain_single_image_s": round(explained["plain_s"], 4),
        "explain_s": round(explained["treated_s"], 4),
        "explain_ratio": round(explained["ratio"], 3),
        "explain_reproduced": explanation.reproduced,
        "explain_max_pixel_difference": explanation.max_pixel_difference,
        "peak_memory_bytes": {"scorer_off": plain_peak, "scorer_on": scored_peak, "explain": explain_peak},
        "rounds": rounds,
    }
