"""`atelier bench sheet`: what the contact sheet of a job's images costs the bot, per zlib level.

A job of several images is delivered as one 2×2 sheet, drawn and PNG-encoded by the bot for every
delivery. For each side, four smooth pictures of that size (a blurred random field, closer to a
generated image than noise, which PNG cannot compress) are made into a sheet at zlib level 6 (Pillow's
default) and at the level Atelier uses, alternating, in one run: ms per sheet and its size in KiB. The
pixels are the same at every level. Nothing here asserts a speed; the result is JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from typing import Any

from bot.services.delivery import SHEET_COMPRESS_LEVEL, grid
from engine.config import ConfigError
from engine.queue.bench import whole_numbers
from engine.timing import percentile

PLAIN_LEVEL = 6


def add_bench_sheet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--side", default="512,1024", help="comma-separated image sides in pixels (default 512,1024)")
    parser.add_argument("--rounds", type=int, default=5, help="timed sheets per level and side (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_bench_sheet(args: argparse.Namespace) -> int:
    sides = whole_numbers(args.side, flag="--side", minimum=8)
    if args.rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    report = {"results": [_measure(side, args.rounds) for side in sides]}
    if args.json:
        print(json.dumps(report))
    else:
        for row in report["results"]:
            print(
                f"{row['side']}²: level {PLAIN_LEVEL} {row['plain_ms']:.1f} ms ({row['plain_kib']} KiB),"
                f" level {SHEET_COMPRESS_LEVEL} {row['sheet_ms']:.1f} ms ({row['sheet_kib']} KiB)"
            )
    return 0


def _measure(side: int, rounds: int) -> dict[str, Any]:
    pngs = _pictures(side)
    timings: dict[int, list[float]] = {PLAIN_LEVEL: [], SHEET_COMPRESS_LEVEL: []}
    sizes: dict[int, int] = {}
    for _ in range(rounds):
        for level, taken in timings.items():
            started = time.perf_counter()
            sizes[level] = len(grid(pngs, compress_level=level))
            taken.append(time.perf_counter() - started)
    plain, sheet = (round(percentile(timings[level], 50) * 1000, 1) for level in (PLAIN_LEVEL, SHEET_COMPRESS_LEVEL))
    return {
        "side": side,
        "plain_level": PLAIN_LEVEL,
        "plain_ms": plain,
        "plain_kib": sizes[PLAIN_LEVEL] // 1024,
        "sheet_level": SHEET_COMPRESS_LEVEL,
        "sheet_ms": sheet,
        "sheet_kib": sizes[SHEET_COMPRESS_LEVEL] // 1024,
        "speedup": round(plain / max(sheet, 1e-3), 2),
    }


def _pictures(side: int) -> list[bytes]:
    import numpy as np
    from PIL import Image, ImageFilter

    made = []
    for seed in range(4):
        field = np.random.default_rng(seed).integers(0, 256, (max(2, side // 8),) * 2 + (3,), dtype=np.uint8)
        picture = Image.fromarray(field).resize((side, side), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        picture.filter(ImageFilter.GaussianBlur(2)).save(buffer, format="PNG")
        made.append(buffer.getvalue())
    return made
