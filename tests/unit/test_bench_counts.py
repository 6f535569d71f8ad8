"""The scale benchmarks' list arguments: what they accept and the one line they refuse with."""

from __future__ import annotations

import pytest

from engine.bench_engines import parse_counts
from engine.queue.bench import parse_depths


@pytest.mark.parametrize("parse", [parse_counts, parse_depths])
def test_comma_separated_counts_are_read_in_order(parse) -> None:  # type: ignore[no-untyped-def]
    assert parse("1,2, 3") == [1, 2, 3]


@pytest.mark.parametrize("parse", [parse_counts, parse_depths])
@pytest.mark.parametrize("text", ["", "0,1", "two", "1,-3"])
def test_empty_zero_negative_or_words_are_refused(parse, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"^--(engines|depth): "):
        parse(text)
