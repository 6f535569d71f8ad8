"""Inline parameters typed into the prompt, as members know them from other bots.

``a fox in the snow --ar 16:9 --seed 42 --no text, watermark --steps 4 --style anime --raw``
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from bot.errors import InvalidRequest

_FLAG = re.compile(r"(?:^|\s)--([a-zA-Z]+)")
KNOWN_FLAGS = {"ar", "aspect", "seed", "no", "steps", "style", "raw", "count"}


@dataclass
class InlineOptions:
    prompt: str
    aspect: tuple[int, int] | None = None
    seed: int | None = None
    negative: str | None = None
    steps: int | None = None
    style: str | None = None
    raw: bool = False
    count: int | None = None
    given: set[str] = field(default_factory=set)


def _int(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest("errors.flag_whole_number", flag=flag, got=value[:20]) from None


def parse_aspect(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d{1,3})\s*[:/x]\s*(\d{1,3})\s*", value)
    if not match:
        raise InvalidRequest("errors.aspect_format", got=value[:20])
    w, h = int(match[1]), int(match[2])
    if not w or not h or max(w / h, h / w) > 4:
        raise InvalidRequest("errors.aspect_range")
    return w, h


def parse_inline(text: str) -> InlineOptions:
    """Split flags from the prompt; unknown flags and bad values are errors, never silently dropped."""
    matches = list(_FLAG.finditer(text))
    options = InlineOptions(prompt=text[: matches[0].start()].strip() if matches else text.strip())
    for i, match in enumerate(matches):
        flag = match[1].lower()
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[match.end() : end].strip()
        if flag not in KNOWN_FLAGS:
            raise InvalidRequest("errors.flag_unknown", flag=flag[:20])
        if flag in options.given:
            raise InvalidRequest("errors.flag_twice", flag=flag)
        options.given.add(flag)
        if flag == "raw":
            if value:
                raise InvalidRequest("errors.raw_value")
            options.raw = True
            continue
        if not value:
            raise InvalidRequest("errors.flag_value", flag=flag)
        if flag in ("ar", "aspect"):
            options.aspect = parse_aspect(value)
        elif flag == "seed":
            options.seed = _int(flag, value)
        elif flag == "steps":
            options.steps = _int(flag, value)
        elif flag == "count":
            options.count = _int(flag, value)
        elif flag == "no":
            options.negative = value
        elif flag == "style":
            options.style = value.lower()
    return options


def size_for_aspect(aspect: tuple[int, int], side: int, multiple: int, minimum: int = 64) -> tuple[int, int]:
    """About ``side``² pixels at the given ratio, each side a multiple of ``multiple`` and at least ``minimum``."""
    w, h = aspect
    scale = max(math.sqrt(side * side / (w * h)), minimum / min(w, h))
    width = max(multiple, round(w * scale / multiple) * multiple)
    height = max(multiple, round(h * scale / multiple) * multiple)
    return width, height
