"""The one percentile every benchmark reports, so their p50s and p95s mean the same thing."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """numpy's linear-interpolation percentile; 0.0 for no values."""
    if not values:
        return 0.0
    import numpy as np

    return float(np.percentile(values, q))
