"""`atelier expand` and `atelier bench expand`."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bot.services.expansion.service import Expansion, ExpansionService


def add_expand_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="the member's request")
    parser.add_argument("--eval", metavar="FILE", help="expand every line of FILE and summarise")
    parser.add_argument("--style")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", action="store_true")
    parser.add_argument("--negative")
    parser.add_argument("--mode", choices=("llm", "presets"), help="overrides ATELIER_EXPANSION_MODE")
    parser.add_argument("--json", action="store_true")


def _service(args: argparse.Namespace) -> ExpansionService:
    from bot.cli import _settings
    from bot.services.container import expansion_config

    settings = _settings(args)
    if getattr(args, "mode", None):
        settings.expansion_mode = args.mode
    settings.ensure_dirs()
    return ExpansionService(expansion_config(settings))


def _as_dict(expansion: Expansion) -> dict[str, Any]:
    return {
        "prompt": expansion.prompt,
        "expanded": expansion.expanded,
        "negative": expansion.negative,
        "source": expansion.source,
        "style": expansion.style,
        "added": expansion.added,
        "tokens": expansion.tokens,
        "ms": expansion.ms,
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 2)


def run_expand(args: argparse.Namespace) -> int:
    if not args.prompt and not args.eval:
        print("error: give a PROMPT or --eval FILE", file=sys.stderr)
        return 2
    prompts: list[str] = []
    if args.eval:
        prompts = [line.strip() for line in Path(args.eval).read_text(encoding="utf-8").splitlines() if line.strip()]
    service = _service(args)

    async def main() -> dict[str, Any]:
        try:
            if args.eval:
                results = [
                    await service.expand(p, style=args.style, seed=args.seed, raw=args.raw, negative=args.negative)
                    for p in prompts
                ]
                latencies = [r.ms for r in results]
                return {
                    "results": [_as_dict(r) for r in results],
                    "summary": {
                        "count": len(results),
                        "fallback_rate": round(sum(r.source == "fallback" for r in results) / max(1, len(results)), 3),
                        "p50_ms": percentile(latencies, 50),
                        "p95_ms": percentile(latencies, 95),
                    },
                }
            result = await service.expand(
                args.prompt, style=args.style, seed=args.seed, raw=args.raw, negative=args.negative
            )
            return _as_dict(result)
        finally:
            await service.aclose()

    try:
        output = asyncio.run(main())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(output, ensure_ascii=False) if args.json else json.dumps(output, ensure_ascii=False, indent=2))
    return 0


BENCH_PROMPTS = [
    "a fox in the snow",
    "a lighthouse on a cliff at dusk",
    "portrait of an old fisherman",
    "a castle above the clouds",
    "a bowl of ramen",
    "a robot reading in a library",
    "a whale in a sea of stars",
    "a red bicycle in the rain",
]


def add_bench_expand_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="largest batch one generate call takes")
    parser.add_argument("--quantization", choices=("nf4", "int8", "none"))
    parser.add_argument("--model", help="a local directory or hub id (default: the configured one)")
    parser.add_argument("--json", action="store_true")


def run_bench_expand(args: argparse.Namespace) -> int:
    """Latency of the LLM path, measured on the raw generate calls (not on the cached service)."""
    from bot.cli import _settings
    from bot.services.container import expansion_config
    from bot.services.expansion.llm import LocalLLM
    from bot.services.expansion.presets import find_style

    settings = _settings(args)
    settings.expansion_mode = "llm"
    settings.ensure_dirs()
    config = expansion_config(settings)
    if args.model:
        config.model = args.model
    if args.quantization:
        config.quantization = args.quantization
    service = ExpansionService(config)
    llm = LocalLLM(config.model, quantization=config.quantization, device=config.device)
    conversation = [service._conversation(p, find_style(None), True) for p in BENCH_PROMPTS]
    llm.generate(conversation[:1], [0], max_new_tokens=8)  # warm-up
    latencies: list[float] = []
    tokens = 0
    started = time.perf_counter()
    done = 0
    while done < args.requests:
        size = min(args.batch, args.requests - done)
        batch = [conversation[(done + i) % len(conversation)] for i in range(size)]
        t0 = time.perf_counter()
        generations = llm.generate(batch, list(range(done, done + size)), max_new_tokens=config.max_new_tokens)
        elapsed = (time.perf_counter() - t0) * 1000
        latencies += [elapsed] * size
        tokens += sum(g.new_tokens for g in generations)
        done += size
    wall = time.perf_counter() - started
    result = {
        "model": config.model,
        "quantization": config.quantization,
        "device": llm.device,
        "requests": args.requests,
        "batch": args.batch,
        "max_new_tokens": config.max_new_tokens,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "new_tokens_per_s": round(tokens / wall, 1),
        "mean_new_tokens": round(statistics.mean([tokens / args.requests]), 1),
    }
    print(json.dumps(result))
    return 0
