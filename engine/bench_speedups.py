"""A UNet speed-up (engine.pipelines.speedups) against the plain pipeline: the same jobs, plain calls on
each, in alternating rounds of one run; the ratio of their rates and the largest pixel difference."""

from __future__ import annotations

import statistics
from typing import Any

from engine.contract import JobSpec
from engine.timing import peak_memory, reset_peak_memory


def compare_speedup(plain: Any, fast: Any, jobs: list[JobSpec], *, rounds: int = 5) -> dict[str, Any]:
    import numpy as np

    from engine.bench import _plain_pass

    images = sum(job.count for job in jobs)
    _plain_pass(plain, jobs[:1]), _plain_pass(fast, jobs[:1])  # warm-up of both at the measured shapes
    rates: dict[str, list[float]] = {"plain": [], "fast": []}
    memory: dict[str, Any] = {}
    outputs: dict[str, list[list[Any]]] = {}
    for _ in range(max(1, rounds)):
        for name, pipeline in (("plain", plain), ("fast", fast)):
            reset_peak_memory()
            outputs[name], _, seconds = _plain_pass(pipeline, jobs)
            rates[name].append(images / seconds)
            memory[name] = peak_memory()
    max_abs_diff = 0
    for plain_images, fast_images in zip(outputs["plain"], outputs["fast"], strict=True):
        for a, b in zip(plain_images, fast_images, strict=True):
            difference = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
            max_abs_diff = max(max_abs_diff, int(difference.max()))
    ratios = [f / p for f, p in zip(rates["fast"], rates["plain"], strict=True)]
    return {
        "unet_quantization": fast.options.unet_quantization,
        "unet_cache": fast.options.unet_cache,
        "plain_images_per_s": round(statistics.median(rates["plain"]), 3),
        "fast_images_per_s": round(statistics.median(rates["fast"]), 3),
        "speedup": round(statistics.median(ratios), 3),
        "max_abs_diff": max_abs_diff,
        "plain_memory": memory["plain"],
        "fast_memory": memory["fast"],
    }
