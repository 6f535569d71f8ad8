from __future__ import annotations

import pytest

from bot.errors import InvalidRequest
from bot.services.inline import parse_inline, size_for_aspect
from bot.services.jobs import parse_size


def test_flags_are_split_from_the_prompt() -> None:
    options = parse_inline("a fox in the snow --ar 16:9 --seed 42 --no text, watermark --steps 4 --style Anime --raw")
    assert options.prompt == "a fox in the snow"
    assert options.aspect == (16, 9)
    assert options.seed == 42
    assert options.negative == "text, watermark"
    assert options.steps == 4
    assert options.style == "anime"
    assert options.raw


def test_prompt_without_flags_is_kept_whole() -> None:
    options = parse_inline("  a lighthouse — on a cliff-top at dusk ")
    assert options.prompt == "a lighthouse — on a cliff-top at dusk"
    assert options.given == set()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a fox --seed forty", "--seed needs a whole number"),
        ("a fox --ar wide", "--ar needs a ratio"),
        ("a fox --ar 10:1", "between 1:4 and 4:1"),
        ("a fox --zoom 2", "Unknown option --zoom"),
        ("a fox --seed 1 --seed 2", "given twice"),
        ("a fox --steps", "--steps needs a value"),
        ("a fox --raw please", "--raw takes no value"),
    ],
)
def test_bad_flags_are_explained(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_inline(text)


def test_aspect_keeps_the_pixel_budget_and_the_multiple() -> None:
    width, height = size_for_aspect((16, 9), 512, 64)
    assert width % 64 == 0 and height % 64 == 0
    assert width > height
    assert abs(width * height - 512 * 512) / (512 * 512) < 0.15
    assert size_for_aspect((1, 1), 64, 8) == (64, 64)


@pytest.mark.parametrize(("text", "size"), [("512", (512, 512)), ("512x768", (512, 768)), ("768 × 512", (768, 512))])
def test_sizes_parse(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


def test_bad_size_is_explained() -> None:
    with pytest.raises(InvalidRequest, match="WIDTHxHEIGHT"):
        parse_size("big")


def test_aspect_never_goes_below_the_minimum_side() -> None:
    assert size_for_aspect((2, 1), 64, 8, minimum=64) == (128, 64)
