"""The numbers behind `atelier eval`: does the scorer agree with members, does expansion help.

Statistics come from scipy (rank correlations, bootstrap intervals); this module only arranges the
data. Bootstrap intervals are seeded so that a report can be reproduced.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BOOTSTRAP_RESAMPLES = 2000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Interval:
    low: float | None
    high: float | None

    def as_list(self) -> list[float | None]:
        return [self.low, self.high]


def _rounded(value: float | None, digits: int = 4) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(float(value), digits)


def spearman_interval(
    x: Sequence[float], y: Sequence[float], *, seed: int = DEFAULT_SEED, confidence: float = 0.95
) -> Interval:
    """A percentile bootstrap interval for Spearman's rho, resampling (x, y) pairs together."""
    from scipy import stats

    if len(x) < 3:
        return Interval(None, None)

    def rho(a: Any, b: Any) -> float:
        return stats.spearmanr(a, b).statistic

    with warnings.catch_warnings():
        # A resample of few distinct values can be constant: scipy warns, its rho is undefined, and an
        # interval it spoils is reported as null rather than as a number.
        warnings.simplefilter("ignore")
        result = _bootstrap_rho(stats, x, y, rho, seed, confidence)
    return Interval(_rounded(result.confidence_interval.low), _rounded(result.confidence_interval.high))


def _bootstrap_rho(stats: Any, x: Sequence[float], y: Sequence[float], rho: Any, seed: int, confidence: float) -> Any:
    return stats.bootstrap(
        (list(x), list(y)),
        rho,
        paired=True,
        vectorized=False,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=confidence,
        method="percentile",
        rng=seed,
    )


def pairwise_accuracy(
    scores: Sequence[float], ratings: Sequence[float], groups: Sequence[str]
) -> tuple[float | None, int]:
    """Of the pairs of images of the same prompt that members rated differently, the share the scorer
    orders the same way (a tie in score counts half), and how many pairs there were."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        by_group[group].append(index)
    agree = 0.0
    pairs = 0
    for members in by_group.values():
        for a, b in itertools.combinations(members, 2):
            if ratings[a] == ratings[b]:
                continue
            pairs += 1
            rated = ratings[a] > ratings[b]
            if scores[a] == scores[b]:
                agree += 0.5
            elif (scores[a] > scores[b]) == rated:
                agree += 1.0
    return (round(agree / pairs, 4) if pairs else None), pairs


def scorer_agreement(
    scores: Sequence[float], ratings: Sequence[float], groups: Sequence[str], *, seed: int = DEFAULT_SEED
) -> dict[str, Any]:
    """How well automatic scores rank images the way members' mean ratings do."""
    from scipy import stats

    n = len(scores)
    if n != len(ratings) or n != len(groups):
        raise ValueError("scores, ratings and groups must have one entry per image")
    spearman = kendall = None
    if n >= 2:
        spearman = _rounded(stats.spearmanr(scores, ratings).statistic)
        kendall = _rounded(stats.kendalltau(scores, ratings).statistic)
    accuracy, pairs = pairwise_accuracy(scores, ratings, groups)
    return {
        "n": n,
        "spearman": spearman,
        "kendall": kendall,
        "ci95": spearman_interval(scores, ratings, seed=seed).as_list(),
        "pairwise_accuracy": accuracy,
        "pairs": pairs,
    }


def mean_interval(values: Sequence[float], *, seed: int = DEFAULT_SEED, confidence: float = 0.95) -> dict[str, Any]:
    """The mean with a seeded bootstrap interval (no normality assumed: scores are not normal)."""
    from scipy import stats

    if not values:
        return {"mean": None, "ci95": [None, None]}
    mean = sum(values) / len(values)
    if len(values) < 2 or len(set(values)) == 1:
        return {"mean": _rounded(mean), "ci95": [_rounded(mean), _rounded(mean)]}
    result = stats.bootstrap(
        (list(values),),
        lambda sample, axis=-1: sample.mean(axis=axis),
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=confidence,
        method="percentile",
        rng=seed,
    )
    interval = result.confidence_interval
    return {"mean": _rounded(mean), "ci95": [_rounded(interval.low), _rounded(interval.high)]}


def win_rate(treated: Sequence[float], control: Sequence[float]) -> dict[str, Any]:
    """The share of prompts where the treated image beats the control (ties half), with Wilson's
    interval from scipy's binomial test, and the sign test's p-value on the decided pairs."""
    from scipy import stats

    if len(treated) != len(control):
        raise ValueError("one treated and one control value per prompt")
    wins = sum(t > c for t, c in zip(treated, control, strict=True))
    ties = sum(t == c for t, c in zip(treated, control, strict=True))
    n = len(treated)
    if n == 0:
        return {"win_rate": None, "ci95": [None, None], "wins": 0, "ties": 0, "n": 0, "p_value": None}
    decided = n - ties
    p_value = _rounded(stats.binomtest(wins, decided).pvalue) if decided else None
    interval = stats.binomtest(round(wins + ties / 2), n).proportion_ci(method="wilson")
    return {
        "win_rate": _rounded((wins + ties / 2) / n),
        "ci95": [_rounded(interval.low), _rounded(interval.high)],
        "wins": wins,
        "ties": ties,
        "n": n,
        "p_value": p_value,
    }


def expansion_report(
    raw_scores: Sequence[float],
    expanded_scores: Sequence[float],
    raw_alignment: Sequence[float],
    expanded_alignment: Sequence[float],
    *,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Expanded against raw, prompt by prompt, for preference and for alignment with the member's words."""
    return {
        "n": len(raw_scores),
        "preference": {
            **win_rate(expanded_scores, raw_scores),
            "raw": mean_interval(raw_scores, seed=seed),
            "expanded": mean_interval(expanded_scores, seed=seed),
        },
        "alignment": {
            **win_rate(expanded_alignment, raw_alignment),
            "raw": mean_interval(raw_alignment, seed=seed),
            "expanded": mean_interval(expanded_alignment, seed=seed),
        },
    }
