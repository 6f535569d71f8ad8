"""`atelier bench expand|engine|queue|sessions|history|taesd|edit`: benchmarks that print JSON."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    from bot.cli.expand import add_bench_expand_arguments, run_bench_expand
    from engine.bench import add_bench_engine_arguments, run_bench_engine
    from engine.bench_previews import add_bench_taesd_arguments, run_bench_taesd
    from engine.queue.bench import (
        add_bench_queue_arguments,
        add_bench_sessions_arguments,
        run_bench_queue,
        run_bench_sessions,
    )

    bench = sub.add_parser("bench", help="benchmarks that print JSON").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("expand", help="expansion LLM latency and tokens/s")
    common(p)
    add_bench_expand_arguments(p)
    p.set_defaults(func=run_bench_expand)

    p = bench.add_parser("engine", help="batched engine against plain sequential diffusers calls")
    common(p)
    add_bench_engine_arguments(p)
    p.set_defaults(func=run_bench_engine)

    p = bench.add_parser("queue", help="fair claim and enqueue cost at several queue depths")
    common(p)
    add_bench_queue_arguments(p)
    p.set_defaults(func=run_bench_queue)

    p = bench.add_parser("sessions", help="database sessions: aiosqlite's own connection against the one-trip one")
    common(p)
    add_bench_sessions_arguments(p)
    p.set_defaults(func=run_bench_sessions)

    from bot.cli.bench_history import add_bench_history_arguments, run_bench_history

    p = bench.add_parser("history", help="the delivery pass and the wait estimate against a server's past jobs")
    common(p)
    add_bench_history_arguments(p)
    p.set_defaults(func=run_bench_history)

    p = bench.add_parser("taesd", help="TAESD against the full VAE (ms per image, PSNR) and the cost of previews")
    common(p)
    add_bench_taesd_arguments(p)
    p.set_defaults(func=run_bench_taesd)

    from engine.bench_edit import add_bench_edit_arguments, run_bench_edit

    p = bench.add_parser("edit", help="edits through the engine against plain pipeline calls; describe latency")
    common(p)
    add_bench_edit_arguments(p)
    p.set_defaults(func=run_bench_edit)
