"""`atelier eval scorer|expansion`: does the preference scorer agree with members, does expansion help.

Both print JSON (indented; one line with --json) and report bad lines of their input instead of
stopping at them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
from collections.abc import Callable
from typing import Any

from bot.cli.expand import _add_common, _config, _print, read_lines
from bot.cli.wiring import settings_from
from bot.config import Settings
from bot.errors import InvalidRequest

log = logging.getLogger(__name__)


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = sub.add_parser("eval", help="evaluate the scorer and the expansion; prints JSON")
    evals = group.add_subparsers(dest="evaluation", required=True)

    p = evals.add_parser("scorer", help="agreement of the scorer with member ratings (`atelier export ratings`)")
    common(p)
    _add_common(p)
    p.add_argument("file", help="JSONL with at least `image` and `mean_score` per line")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap interval")
    p.set_defaults(func=run_eval_scorer)

    p = evals.add_parser("expansion", help="raw against expanded prompts, same seed, both scored")
    common(p)
    _add_common(p)
    p.add_argument("file", help="one request per line (or JSONL with `member_prompt` or `prompt`)")
    p.add_argument("--style", help="the style preset to expand with (default: photographic)")
    p.add_argument("--seed", type=int, default=0, help="image seed of the first prompt; the next get seed+1, …")
    p.add_argument("--mode", choices=("llm", "presets"), help="overrides ATELIER_EXPANSION_MODE")
    p.set_defaults(func=run_eval_expansion)


def _scorer(settings: Settings):  # type: ignore[no-untyped-def]
    from engine.pipelines.registry import pick_device
    from engine.pipelines.scorer import load_scorer

    if settings.preference_scorer is None:
        raise InvalidRequest("no preference scorer is configured (ATELIER_SCORER_MODEL is none)")
    device, dtype = pick_device(settings.device, settings.dtype)
    return load_scorer(
        settings.preference_scorer, settings.scorer_processor, settings.models_dir, device=device, dtype=dtype
    )


def _image(path: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"cannot read the image {path}: {type(error).__name__}") from None


def run_eval_scorer(args: argparse.Namespace) -> int:
    from bot.services.evaluation import scorer_agreement

    settings = settings_from(args)
    settings.ensure_dirs()
    lines, errors = read_lines(args.file)
    pictures, ratings, prompts, members = [], [], [], []
    for number, text in lines:
        try:
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("not JSON") from None
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
            if "image" not in entry or "mean_score" not in entry:
                raise ValueError("needs `image` and `mean_score`")
            rating = float(entry["mean_score"])
            picture = _image(str(entry["image"]))
        except (ValueError, TypeError) as error:
            errors.append({"line": number, "error": str(error)[:200]})
            continue
        member = str(entry.get("member_prompt") or entry.get("prompt") or "")
        pictures.append(picture)
        ratings.append(rating)
        members.append(member)
        # Scored as at generation: against the prompt the image was drawn from.
        prompts.append(str(entry.get("model_prompt") or member))
    scorer = _scorer(settings)
    scores = [s.score for s in scorer.score(pictures, prompts, members)]
    report = scorer_agreement(scores, ratings, members, seed=args.seed)
    _print({"scorer": scorer.name, **report, "errors": errors}, args)
    return 0


def _requests(path: str) -> tuple[list[str], list[dict[str, Any]]]:
    lines, errors = read_lines(path)
    prompts = []
    for number, text in lines:
        if text.startswith("{"):
            try:
                entry = json.loads(text)
                text = str(entry.get("member_prompt") or entry.get("prompt") or "").strip()
            except (ValueError, AttributeError):
                errors.append({"line": number, "error": "not a JSON object with `member_prompt` or `prompt`"})
                continue
        if text:
            prompts.append(text)
        else:
            errors.append({"line": number, "error": "no request in the line"})
    return prompts, errors


def run_eval_expansion(args: argparse.Namespace) -> int:
    """For each request: the raw prompt and its expansion drawn with the same seed, both scored for
    preference and for alignment against the member's own words (the fair judge of both)."""
    from bot.services.evaluation import expansion_report
    from bot.services.expansion import ExpansionService
    from bot.services.models import profile_for
    from engine.contract import JobSpec
    from engine.pipelines.registry import resolve_model
    from engine.pipelines.text_to_image import PipelineOptions, TextToImage

    settings = settings_from(args)
    prompts, errors = _requests(args.file)
    if not prompts:
        raise InvalidRequest(f"{args.file} has no request to evaluate")
    expander = ExpansionService(_config(args))
    scorer = _scorer(settings)
    model = settings.image_model
    pipeline = TextToImage(
        model,
        resolve_model(model, settings.models_dir),
        device=settings.device,
        dtype=settings.dtype,
        options=PipelineOptions(warmup=False),
    )
    profile = profile_for(model)

    async def expand_all() -> list[tuple[Any, Any]]:
        try:
            pairs = []
            for number, prompt in enumerate(prompts):
                seed = args.seed + number
                raw = await expander.expand(prompt, seed=seed, raw=True)
                expanded = await expander.expand(prompt, style=args.style, seed=seed)
                pairs.append((raw, expanded))
            return pairs
        finally:
            await expander.aclose()

    try:
        pairs = asyncio.run(expand_all())
    except ValueError as error:  # an unknown style
        raise InvalidRequest(str(error)) from None
    specs = []
    for number, (raw, expanded) in enumerate(pairs):
        for expansion in (raw, expanded):
            specs.append(
                JobSpec(
                    kind="txt2img",
                    member_prompt=expansion.member_prompt,
                    model_prompt=expansion.model_prompt,
                    negative_prompt=expansion.negative,
                    model=model,
                    width=profile.side,
                    height=profile.side,
                    steps=profile.steps,
                    guidance=profile.guidance,
                    seed=args.seed + number,
                )
            )
    from PIL import Image

    pictures = []
    for spec in specs:  # one at a time: a batch's rounding must not favour either side
        png = pipeline.generate([spec]).images[0][0].png
        pictures.append(Image.open(io.BytesIO(png)).convert("RGB"))
    members = [spec.member_prompt for spec in specs]
    scored = scorer.score(pictures, members, members)
    raw_scores = [s.score for s in scored[0::2]]
    expanded_scores = [s.score for s in scored[1::2]]
    report = expansion_report(
        raw_scores,
        expanded_scores,
        [s.alignment for s in scored[0::2]],
        [s.alignment for s in scored[1::2]],
        seed=args.seed,
    )
    results = [
        {
            "member_prompt": raw.member_prompt,
            "model_prompt": expanded.model_prompt,
            "source": expanded.source,
            "seed": args.seed + number,
            "raw": {"score": a.score, "alignment": a.alignment},
            "expanded": {"score": b.score, "alignment": b.alignment},
        }
        for number, ((raw, expanded), a, b) in enumerate(zip(pairs, scored[0::2], scored[1::2], strict=True))
    ]
    _print({"scorer": scorer.name, "model": model, **report, "results": results, "errors": errors}, args)
    return 0
