"""`atelier bench sheet`: the contact sheet's and an engine image's cost at zlib level 6 and at
Atelier's levels, in one run."""

from __future__ import annotations

import json

from tests.integration.test_cli import atelier


def test_bench_sheet_times_the_contact_sheet_and_an_image_at_both_levels(settings_env: dict[str, str]) -> None:
    result = atelier(settings_env, "bench", "sheet", "--side", "16,32", "--rounds", "1", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    levels = [(row["side"], row["plain_level"], row["sheet_level"], row["image_level"]) for row in rows]
    assert levels == [(16, 6, 1, 1), (32, 6, 1, 1)]
    timed = ("plain_ms", "sheet_ms", "image_plain_ms", "image_ms")
    assert all(row[name] > 0 for row in rows for name in timed)


def test_bench_sheet_refuses_a_bad_side_in_one_line(settings_env: dict[str, str]) -> None:
    result = atelier(settings_env, "bench", "sheet", "--side", "big")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --side: expected comma-separated whole numbers of at least 8, got 'big'"
    ]
