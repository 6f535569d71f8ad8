"""`atelier bench sheet`: what PNG encoding costs on a result's path, per zlib level.

Every image an engine makes is encoded as a PNG with its metadata on the compute thread, and a job of
several images is delivered as one 2×2 sheet, drawn and encoded by the bot for every delivery. For each
side, four smooth pictures of that size (a blurred random field, closer to a generated image than
noise, which PNG cannot compress) are encoded one by one as the engine does and made into a sheet as the
bot does, each at zlib level 6 (Pillow's default) and at the level Atelier uses, alternating, in one run:
ms per image and per sheet, and their sizes in KiB. The pixels are the same at every level. Nothing here
asserts a speed; the result is JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from bot.services.delivery import SHEET_COMPRESS_LEVEL, grid
from engine.config import ConfigError
from engine.contract import JobSpec
from engine.pngmeta import PNG_COMPRESS_LEVEL, png_with_metadata
from engine.queue.bench import whole_numbers
from engine.timing import percentile

PLAIN_LEVEL = 6


def add_bench_sheet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--side", default="512,1024", help="comma-separated image sides in pixels (default 512,1024)")
    parser.add_argument("--rounds", type=int, default=5, help="timed sheets and images per level and side (default 5)")
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
                f"{row['side']}² sheet: level {PLAIN_LEVEL} {row['plain_ms']:.1f} ms ({row['plain_kib']} KiB),"
                f" level {SHEET_COMPRESS_LEVEL} {row['sheet_ms']:.1f} ms ({row['sheet_kib']} KiB);"
                f" image: level {PLAIN_LEVEL} {row['image_plain_ms']:.1f} ms ({row['image_plain_kib']} KiB),"
                f" level {PNG_COMPRESS_LEVEL} {row['image_ms']:.1f} ms ({row['image_kib']} KiB)"
            )
    return 0


def _measure(side: int, rounds: int) -> dict[str, Any]:
    pngs = _pictures(side)
    spec = JobSpec(
        kind="txt2img",
        member_prompt="a fox in the snow",
        model_prompt="a fox in the snow, soft light, detailed fur",
        negative_prompt="blurry",
        model="stabilityai/sd-turbo",
        width=side,
        height=side,
        steps=1,
        guidance=0.0,
        seed=0,
    )
    timings: dict[str, list[float]] = {"plain": [], "sheet": [], "image_plain": [], "image": []}
    sizes: dict[str, int] = {}
    # Decoded once: the engine encodes the pictures its pipeline has just made.
    pictures = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    encodings: dict[str, Callable[[], int]] = {
        "plain": lambda: len(grid(pngs, compress_level=PLAIN_LEVEL)),
        "sheet": lambda: len(grid(pngs, compress_level=SHEET_COMPRESS_LEVEL)),
        "image_plain": lambda: _encode_each(pictures, spec, PLAIN_LEVEL),
        "image": lambda: _encode_each(pictures, spec, PNG_COMPRESS_LEVEL),
    }
    for _ in range(rounds):
        for name, encode in encodings.items():
            started = time.perf_counter()
            sizes[name] = encode()
            timings[name].append(time.perf_counter() - started)
    # An image's figures are per image: the four are encoded one after another, as an engine does.
    each = {"plain": 1, "sheet": 1, "image_plain": len(pngs), "image": len(pngs)}
    ms = {name: round(percentile(taken, 50) * 1000 / each[name], 1) for name, taken in timings.items()}
    kib = {name: sizes[name] // each[name] // 1024 for name in sizes}
    return {
        "side": side,
        "plain_level": PLAIN_LEVEL,
        "plain_ms": ms["plain"],
        "plain_kib": kib["plain"],
        "sheet_level": SHEET_COMPRESS_LEVEL,
        "sheet_ms": ms["sheet"],
        "sheet_kib": kib["sheet"],
        "speedup": round(ms["plain"] / max(ms["sheet"], 1e-3), 2),
        "image_level": PNG_COMPRESS_LEVEL,
        "image_plain_ms": ms["image_plain"],
        "image_plain_kib": kib["image_plain"],
        "image_ms": ms["image"],
        "image_kib": kib["image"],
        "image_speedup": round(ms["image_plain"] / max(ms["image"], 1e-3), 2),
    }


def _encode_each(pictures: list[Image.Image], spec: JobSpec, level: int) -> int:
    """Bytes of the pictures encoded one by one with their metadata, as an engine writes them."""
    return sum(
        len(png_with_metadata(picture, spec, seed, compress_level=level)) for seed, picture in enumerate(pictures)
    )


def _pictures(side: int) -> list[bytes]:
    import numpy as np
    from PIL import ImageFilter

    made = []
    for seed in range(4):
        field = np.random.default_rng(seed).integers(0, 256, (max(2, side // 8),) * 2 + (3,), dtype=np.uint8)
        picture = Image.fromarray(field).resize((side, side), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        picture.filter(ImageFilter.GaussianBlur(2)).save(buffer, format="PNG")
        made.append(buffer.getvalue())
    return made
