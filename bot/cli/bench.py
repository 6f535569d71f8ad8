"""`atelier bench expand|engine|queue|sessions|history|sheet|taesd|edit`: benchmarks that print JSON."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    from bot.cli import bench_history, bench_sheet, expand
    from engine import bench, bench_edit, bench_previews
    from engine.queue import bench as queue_bench

    # (name, help, the module with its add_bench_<name>_arguments and run_bench_<name>)
    benchmarks = (
        ("expand", "expansion LLM latency and tokens/s", expand),
        ("engine", "batched engine against plain sequential diffusers calls", bench),
        ("queue", "fair claim and enqueue cost at several queue depths", queue_bench),
        ("sessions", "database sessions: aiosqlite's own connection against the one-trip one", queue_bench),
        ("history", "the delivery pass and the wait estimate against a server's past jobs", bench_history),
        ("sheet", "PNG encoding of engine images and the contact sheet, zlib 6 against Atelier's", bench_sheet),
        ("taesd", "TAESD against the full VAE (ms per image, PSNR) and the cost of previews", bench_previews),
        ("edit", "edits through the engine against plain pipeline calls; describe latency", bench_edit),
    )
    parsers = sub.add_parser("bench", help="benchmarks that print JSON").add_subparsers(dest="bench", required=True)
    for name, help_text, module in benchmarks:
        parser = parsers.add_parser(name, help=help_text)
        common(parser)
        getattr(module, f"add_bench_{name}_arguments")(parser)
        parser.set_defaults(func=getattr(module, f"run_bench_{name}"))
