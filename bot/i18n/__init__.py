"""Atelier's words, in every language it speaks: one TOML catalog per locale, keyed by dotted names.

Plain Python (no discord): services raise errors by key, the CLI prints them in English, and the bot
renders them in the member's language (bot/ui/translator.py). Adding a string is one line in each
catalog; tests/unit/test_i18n.py fails until every language has it with the same placeholders.
"""

from __future__ import annotations

import logging
import string
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_LOCALE = "en"
# The catalogs shipped; Discord's locale names (en-US, zh-CN, …) map onto them with `supported`.
LOCALES = ("en", "zh-CN")
_HERE = Path(__file__).resolve().parent


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = str(value)
    return flat


def load(path: Path) -> dict[str, str]:
    """A TOML catalog as flat dotted keys (``[result.source] llm = …`` → ``result.source.llm``)."""
    with path.open("rb") as handle:
        return _flatten(tomllib.load(handle))


@cache
def catalog(locale: str) -> dict[str, str]:
    """Every string of one locale, by key."""
    return load(_HERE / f"{locale}.toml")


def supported(locale: str | None) -> str:
    """The catalog for a Discord locale (``zh-CN``, ``en-GB``, ``de`` …): an exact match, then the same
    language, then English."""
    if not locale:
        return DEFAULT_LOCALE
    if locale in LOCALES:
        return locale
    language = locale.split("-")[0].lower()
    for known in LOCALES:
        if known.split("-")[0].lower() == language:
            return known
    return DEFAULT_LOCALE


def speaks(locale: str | None) -> bool:
    """Whether a catalog serves this Discord locale's language (en-GB: yes, de: not yet)."""
    if not locale:
        return False
    language = locale.split("-")[0].lower()
    return any(known.split("-")[0].lower() == language for known in LOCALES)


def has(key: str) -> bool:
    return key in catalog(DEFAULT_LOCALE)


def text(locale: str | None, key: str, /, **params: Any) -> str:
    """The string ``key`` in ``locale`` (English where that locale lacks it), filled with ``params``."""
    template = catalog(supported(locale)).get(key)
    if template is None:
        template = catalog(DEFAULT_LOCALE)[key]  # a key missing in English is a bug: let it raise
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        # A template and its caller disagree: show the words rather than fail the member's request.
        log.exception("catalog string %s in %s could not be filled with %s", key, locale, sorted(params))
        return template


def placeholders(template: str) -> set[str]:
    """The names a template fills in (``{count}``, ``{size:.1f}`` → count, size)."""
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}
