"""`atelier expand` and `atelier bench expand`: both print JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.cli.wiring import expansion_config, settings_from
from bot.errors import InvalidRequest
from bot.services.expansion.service import Expansion, ExpansionConfig, ExpansionService
from engine.timing import peak_memory, percentile, reset_peak_memory

BENCH_PROMPTS = (
    "a fox in the snow",
    "a lighthouse on a cliff at dusk",
    "portrait of an old fisherman",
    "a castle above the clouds",
    "a bowl of ramen",
    "a robot reading in a library",
    "a whale in a sea of stars",
    "a red bicycle in the rain",
)


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("expand", help="expand a prompt as /imagine would")
    common(p)
    add_expand_arguments(p)
    p.set_defaults(func=run_expand)


def _add_once(parser: argparse.ArgumentParser, *flags: str, **kwargs: Any) -> None:
    # `atelier` adds its shared options (--tiny, --data-dir) to every command before these.
    if not any(flag in parser._option_string_actions for flag in flags):
        parser.add_argument(*flags, **kwargs)


def _add_common(parser: argparse.ArgumentParser) -> None:
    _add_once(parser, "--tiny", action="store_true", help="the offline tiny chat model (built on first use)")
    _add_once(parser, "--data-dir", help="overrides ATELIER_DATA_DIR")
    _add_once(parser, "--json", action="store_true", help="one line of JSON (the default is indented JSON)")


def add_expand_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("prompt", nargs="?", help="the member's request")
    parser.add_argument("--eval", metavar="FILE", help="expand every non-empty line of FILE and summarise")
    parser.add_argument("--style", help="a style preset (default: photographic)")
    parser.add_argument("--seed", type=int, default=0, help="the image seed; the expansion is seeded from it")
    parser.add_argument("--raw", action="store_true", help="skip expansion: the prompt cut to the window")
    parser.add_argument("--negative", help="the member's negative prompt")
    parser.add_argument(
        "--mode",
        choices=("llm", "presets"),
        help="overrides ATELIER_EXPANSION_MODE (with --tiny and no mode configured: llm)",
    )


def _config(args: argparse.Namespace, *, mode: str | None = None) -> ExpansionConfig:
    settings = settings_from(args)
    if mode is not None:
        settings.expansion_mode = mode
    elif getattr(args, "mode", None):
        settings.expansion_mode = args.mode
    elif getattr(args, "tiny", False) and "expansion_mode" not in settings.model_fields_set:
        settings.expansion_mode = "llm"  # --tiny is how one tries the LLM path without a download
    settings.ensure_dirs()
    return expansion_config(settings)


def as_dict(expansion: Expansion) -> dict[str, Any]:
    return {
        "member_prompt": expansion.member_prompt,
        "model_prompt": expansion.model_prompt,
        "negative": expansion.negative,
        "source": expansion.source,
        "style": expansion.style,
        "added": expansion.added,
        "tokens": expansion.tokens,
        "ms": expansion.ms,
        "guard": expansion.guard,
    }


def _ms(values: list[float], q: float) -> float:
    return round(percentile(values, q), 2)


def _print(value: Any, args: argparse.Namespace) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=None if getattr(args, "json", False) else 2))


def read_lines(path: str) -> tuple[list[tuple[int, str]], list[dict[str, Any]]]:
    """The non-empty lines of a file with their numbers, and one error entry per line that is not
    UTF-8: a bad line is reported and skipped, the rest of the file is still evaluated."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise InvalidRequest(f"cannot read {path}: {error.strerror}") from None
    lines: list[tuple[int, str]] = []
    unreadable: list[dict[str, Any]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            unreadable.append({"line": number, "error": "not valid UTF-8"})
            continue
        if text:
            lines.append((number, text))
    return lines, unreadable


def run_expand(args: argparse.Namespace) -> int:
    if not args.prompt and not args.eval:
        raise InvalidRequest("give a PROMPT or --eval FILE")
    if args.prompt is not None and not args.prompt.strip():
        raise InvalidRequest("the prompt is empty: describe the image you want")
    prompts: list[str] = []
    unreadable: list[dict[str, Any]] = []
    if args.eval:
        lines, unreadable = read_lines(args.eval)
        prompts = [text for _, text in lines]
    service = ExpansionService(_config(args))

    async def expand(prompt: str) -> Expansion:
        return await service.expand(prompt, style=args.style, seed=args.seed, raw=args.raw, negative=args.negative)

    async def main() -> dict[str, Any]:
        try:
            if not args.eval:
                result = as_dict(await expand(args.prompt))
                return {
                    key: result[key] for key in ("member_prompt", "model_prompt", "negative", "source", "tokens", "ms")
                }
            # One at a time: each latency is one request's, not a share of a batch.
            results = [await expand(p) for p in prompts]
            latencies = [r.ms for r in results]
            return {
                "results": [as_dict(r) for r in results],
                "errors": unreadable,
                "summary": {
                    "count": len(results),
                    "fallback_rate": round(sum(r.source == "fallback" for r in results) / max(1, len(results)), 3),
                    "p50_ms": _ms(latencies, 50),
                    "p95_ms": _ms(latencies, 95),
                },
            }
        finally:
            await service.aclose()

    try:
        output = asyncio.run(main())
    except ValueError as error:  # an unknown style: the message lists the styles
        raise InvalidRequest(str(error)) from None
    _print(output, args)
    return 0


def add_bench_expand_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="largest batch one generate call takes")
    parser.add_argument("--quantization", choices=("nf4", "int8", "none"))
    parser.add_argument("--model", help="a local directory or hub id (default: the configured one)")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="Qwen2.5-1.5B's architecture from engine/configs with random weights: the real model's speed offline",
    )
    parser.add_argument("--max-new-tokens", type=int, help="default: the configured max_new_tokens")
    parser.add_argument(
        "--arch",
        choices=RANDOM_ARCHITECTURES,
        default="qwen2.5-1.5b",
        help="the architecture --random-weights builds (default qwen2.5-1.5b; qwen2.5-0.5b for a CPU)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="plain generate per request against batching and against batching with the system prompt's cache",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --compare (medians reported)")


RANDOM_ARCHITECTURES = ("qwen2.5-0.5b", "qwen2.5-1.5b")


def compare_generation(
    llm: Any,
    conversations: list[list[dict[str, str]]],
    config: ExpansionConfig,
    args: argparse.Namespace,
    requests: int,
) -> dict[str, Any]:
    """One burst of ``requests`` three ways, on the same loaded model, in one run:

    - plain: one ``generate`` per request, one after the other (a script without Atelier);
    - batched: the burst in calls of --batch requests (Atelier's batcher), each row encoding the system
      prompt anew;
    - atelier: batched, every call continuing from the system prompt's cached keys and values.

    Latencies run from the burst's start (a request waits for those before it). Each round runs the
    three in a rotated order, so warm-up and a shared machine's drift fall on each alike; rates are
    medians over rounds, latencies pooled. Replies are seeded per request and compared with plain's.
    """
    burst = [conversations[i % len(conversations)] for i in range(requests)]
    seeds = list(range(requests))
    ways = {"plain": (1, False), "batched": (max(1, args.batch), False), "atelier": (max(1, args.batch), True)}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    latencies: dict[str, list[float]] = {name: [] for name in ways}
    memory: dict[str, dict[str, float | None]] = {}
    replies: dict[str, list[str]] = {}
    rounds = max(1, args.rounds)
    for round_index in range(rounds):
        order = list(ways)[round_index % 3 :] + list(ways)[: round_index % 3]
        for name in order:
            batch, reuse = ways[name]
            llm.reuse_system_prompt = reuse
            reset_peak_memory()
            texts: list[str] = []
            new_tokens = 0
            started = time.perf_counter()
            for first in range(0, requests, batch):
                generations = llm.generate(
                    burst[first : first + batch],
                    seeds[first : first + batch],
                    max_new_tokens=config.max_new_tokens,
                    temperature=config.temperature,
                    top_k=config.top_k,
                )
                latencies[name] += [(time.perf_counter() - started) * 1000] * len(generations)
                new_tokens += sum(g.new_tokens for g in generations)
                texts += [g.text for g in generations]
            rates[name].append(new_tokens / (time.perf_counter() - started))
            memory[name] = peak_memory()
            replies[name] = texts
    llm.reuse_system_prompt = True
    report: dict[str, Any] = {
        "quantization": llm.quantization,
        "device": llm.device,
        "requests": requests,
        "batch": args.batch,
        "rounds": rounds,
        "max_new_tokens": config.max_new_tokens,
    }
    for name in ways:
        report[name] = {
            "new_tokens_per_s": round(statistics.median(rates[name]), 1),
            "p50_ms": _ms(latencies[name], 50),
            "p95_ms": _ms(latencies[name], 95),
            **memory[name],
        }
    for name in ("batched", "atelier"):
        report[f"{name}_speedup"] = round(report[name]["new_tokens_per_s"] / report["plain"]["new_tokens_per_s"], 2)
        report[f"{name}_p50_ratio"] = round(report[name]["p50_ms"] / report["plain"]["p50_ms"], 3)
        same = sum(a == b for a, b in zip(replies[name], replies["plain"], strict=True))
        report[f"{name}_same_replies"] = round(same / requests, 3)
    report["atelier_vs_batched_speedup"] = round(
        report["atelier"]["new_tokens_per_s"] / report["batched"]["new_tokens_per_s"], 2
    )
    return report


def run_bench_expand(args: argparse.Namespace) -> int:
    """Latency and tokens/s of the LLM: raw batched generate calls, then the service under a burst."""
    from bot.services.expansion.llm import LocalLLM
    from bot.services.expansion.presets import find_style

    config = _config(args, mode="llm")
    if args.random_weights:
        from engine.tiny_llm import CONFIGS_DIR, build_random_llm

        config.model = str(
            build_random_llm(
                settings_from(args).models_dir / f"random-{args.arch}", config_file=CONFIGS_DIR / f"{args.arch}.json"
            )
        )
        config.quantization = "nf4"
    if args.model:
        config.model = args.model
    if args.quantization:
        config.quantization = args.quantization
    if args.max_new_tokens:
        config.max_new_tokens = args.max_new_tokens
    config.batch_max = args.batch
    requests = max(1, args.requests)

    loading = time.perf_counter()
    llm = LocalLLM(config.model, quantization=config.quantization, device=config.device)
    load_s = time.perf_counter() - loading
    probe = ExpansionService(config, llm_factory=lambda _: llm)
    conversations = [probe.conversation(p, find_style(None)) for p in BENCH_PROMPTS]
    llm.generate(conversations[:1], [0], max_new_tokens=4)  # warm-up: first-call allocations, kernels
    if args.compare:
        _print({"model": config.model, **compare_generation(llm, conversations, config, args, requests)}, args)
        return 0

    reset_peak_memory()
    # 1. The model alone: requests arrive in groups of --batch and each group is one generate call.
    latencies: list[float] = []
    new_tokens = 0
    started = time.perf_counter()
    done = 0
    while done < requests:
        size = min(args.batch, requests - done)
        batch = [conversations[(done + i) % len(conversations)] for i in range(size)]
        t0 = time.perf_counter()
        generations = llm.generate(
            batch,
            list(range(done, done + size)),
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_k=config.top_k,
        )
        latencies += [(time.perf_counter() - t0) * 1000] * size
        new_tokens += sum(g.new_tokens for g in generations)
        done += size
    wall = time.perf_counter() - started

    # 2. The service as the bot uses it: a burst of concurrent requests (distinct seeds, so no cache
    # hits) through the dynamic batcher, the guards and the fallback.
    service = ExpansionService(config, llm_factory=lambda _: llm)

    async def burst() -> tuple[list[Expansion], float]:
        t0 = time.perf_counter()
        try:
            results = await asyncio.gather(
                *(service.expand(BENCH_PROMPTS[i % len(BENCH_PROMPTS)], seed=10_000 + i) for i in range(requests))
            )
        finally:
            await service.aclose()
        return list(results), time.perf_counter() - t0

    results, burst_s = asyncio.run(burst())
    service_ms = [r.ms for r in results]
    _print(
        {
            "model": config.model,
            "quantization": llm.quantization,
            "device": llm.device,
            "load_s": round(load_s, 2),
            "requests": requests,
            "batch": args.batch,
            "max_new_tokens": config.max_new_tokens,
            "p50_ms": _ms(latencies, 50),
            "p95_ms": _ms(latencies, 95),
            "new_tokens_per_s": round(new_tokens / wall, 1),
            "mean_new_tokens": round(new_tokens / requests, 1),
            "service": {
                "p50_ms": _ms(service_ms, 50),
                "p95_ms": _ms(service_ms, 95),
                "wall_s": round(burst_s, 3),
                "generate_calls": service.generate_calls,
                "generated_requests": service.generated_requests,
                "fallback_rate": round(sum(r.source == "fallback" for r in results) / requests, 3),
            },
            # Over both measurements (the same model; the service batches up to --batch as well).
            **peak_memory(),
        },
        args,
    )
    return 0
