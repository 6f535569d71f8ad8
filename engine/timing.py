"""The one percentile every benchmark reports, so their p50s and p95s mean the same thing."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """numpy's linear-interpolation percentile; 0.0 for no values."""
    if not values:
        return 0.0
    import numpy as np

    return float(np.percentile(values, q))


def reset_peak_memory() -> None:
    """Start a new GPU peak (the process's RSS peak cannot be reset: it is the high-water mark so far)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, float | None]:
    """Peak memory since the last reset, in MiB, for the JSON of every benchmark: the GPU's
    ``max_memory_allocated`` (None without CUDA) and the process's RSS high-water mark."""
    import resource
    import sys

    import torch

    gpu = round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return {"gpu_peak_mb": gpu, "rss_peak_mb": round(rss, 1)}
