"""The statistics of `atelier eval` on data whose answers are known by hand."""

from __future__ import annotations

import math

import pytest

from bot.services.evaluation import expansion_report, mean_interval, pairwise_accuracy, scorer_agreement, win_rate


def test_rank_correlations_on_known_data() -> None:
    # x strictly increasing, y = 5 6 7 8 7: of the 10 pairs 8 are concordant, 1 discordant, 1 tied in y,
    # so Kendall's tau-b is (8 - 1) / sqrt(10 × 9); Spearman's rho on ranks 1..5 against 1 2 3.5 5 3.5
    # is 0.8207826816681233 (the worked example of scipy's documentation).
    report = scorer_agreement([1, 2, 3, 4, 5], [5, 6, 7, 8, 7], ["p"] * 5)
    assert report["n"] == 5
    assert report["kendall"] == pytest.approx(7 / math.sqrt(90), abs=1e-4)
    assert report["spearman"] == pytest.approx(0.8208, abs=1e-4)
    perfect = scorer_agreement([0.1, 0.5, 0.9, 1.3], [1, 2, 4, 5], ["a", "a", "b", "b"])
    reversed_ = scorer_agreement([0.1, 0.5, 0.9, 1.3], [5, 4, 2, 1], ["a", "a", "b", "b"])
    assert (perfect["spearman"], perfect["kendall"]) == (1.0, 1.0)
    assert (reversed_["spearman"], reversed_["kendall"]) == (-1.0, -1.0)
    assert (perfect["pairwise_accuracy"], reversed_["pairwise_accuracy"]) == (1.0, 0.0)


def test_the_bootstrap_interval_is_seeded_and_brackets_the_estimate() -> None:
    scores = [0.2, 0.4, 0.1, 0.9, 0.7, 0.5, 0.3, 0.8, 0.6, 1.0]
    ratings = [2, 3, 1, 5, 4, 2, 2, 5, 3, 4]
    groups = [str(i % 3) for i in range(10)]
    first = scorer_agreement(scores, ratings, groups, seed=3)
    assert first == scorer_agreement(scores, ratings, groups, seed=3)
    low, high = first["ci95"]
    assert low is not None and high is not None and low <= first["spearman"] <= high <= 1.0


def test_pairwise_accuracy_uses_only_pairs_of_one_prompt_rated_apart() -> None:
    # Prompt a: (0.9 rated 5) vs (0.1 rated 1) agree; prompt b: (0.2 rated 4) vs (0.8 rated 2) disagree,
    # and (0.8 rated 2) vs (0.5 rated 2) is a tie in rating, not counted. Across prompts nothing is paired.
    accuracy, pairs = pairwise_accuracy([0.9, 0.1, 0.2, 0.8, 0.5], [5, 1, 4, 2, 2], ["a", "a", "b", "b", "b"])
    assert pairs == 3  # a: 1 pair; b: (4 vs 2) twice
    assert accuracy == pytest.approx(1 / 3, abs=1e-4)
    assert pairwise_accuracy([1.0, 1.0], [5, 1], ["a", "a"]) == (0.5, 1)  # a tie in score counts half


def test_win_rate_and_means_with_intervals() -> None:
    result = win_rate([2.0, 3.0, 1.0, 5.0], [1.0, 3.0, 2.0, 4.0])
    assert (result["wins"], result["ties"], result["n"]) == (2, 1, 4)
    assert result["win_rate"] == pytest.approx(2.5 / 4)
    low, high = result["ci95"]
    assert 0.0 <= low < result["win_rate"] < high <= 1.0
    mean = mean_interval([1.0, 2.0, 3.0, 4.0], seed=1)
    assert mean["mean"] == 2.5 and mean["ci95"][0] < 2.5 < mean["ci95"][1]
    report = expansion_report([1.0, 2.0], [2.0, 3.0], [0.1, 0.2], [0.0, 0.3])
    assert report["preference"]["win_rate"] == 1.0 and report["alignment"]["win_rate"] == 0.5
    assert report["preference"]["expanded"]["mean"] == 2.5
