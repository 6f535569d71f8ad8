"""The message catalog: every key in every language with the same placeholders, and every refusal the
bot can give members comes from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bot import i18n
from bot.errors import AtelierError, InvalidRequest, QuotaExceeded
from bot.ui.translator import command_catalog, error_text
from tests.simulator.rules import COMMAND_NAME, LOCALES

ROOT = Path(__file__).resolve().parents[2]
ERRORS = {"AtelierError", "InvalidRequest", "Refused", "QuotaExceeded", "PolicyRefused", "NotFound", "Unavailable"}


@pytest.mark.parametrize("locale", [loc for loc in i18n.LOCALES if loc != i18n.DEFAULT_LOCALE])
def test_every_key_exists_in_every_language_with_the_same_placeholders(locale: str) -> None:
    english, other = i18n.catalog(i18n.DEFAULT_LOCALE), i18n.catalog(locale)
    assert sorted(set(english) - set(other)) == [], f"missing in {locale}"
    assert sorted(set(other) - set(english)) == [], f"only in {locale}"
    differ = {k: (i18n.placeholders(english[k]), i18n.placeholders(other[k])) for k in english}
    assert {k: v for k, v in differ.items() if v[0] != v[1]} == {}
    assert all(other[k].strip() for k in other), "an empty translation"


def test_every_catalog_is_a_discord_locale() -> None:
    for locale in i18n.LOCALES:
        assert locale in LOCALES or locale == i18n.DEFAULT_LOCALE


def test_discord_locales_map_onto_the_catalogs() -> None:
    assert i18n.supported("zh-CN") == "zh-CN"
    assert i18n.supported("zh-TW") == "zh-CN"  # the same language is closer than English
    assert i18n.supported("en-GB") == i18n.supported("de") == i18n.supported(None) == "en"
    assert i18n.speaks("en-US") and i18n.speaks("zh-TW") and not i18n.speaks("de") and not i18n.speaks(None)


def test_command_translations_are_names_discord_accepts() -> None:
    for locale in i18n.LOCALES:
        for key, value in command_catalog(locale).items():
            if key.endswith(".name") and key[0].isupper():
                # A message menu ("Edit with Atelier"): any 1–32 characters, spaces and capitals included.
                assert 1 <= len(value) <= 32, (locale, key, value)
            elif key.endswith(".name") and not key.startswith("choices."):
                assert COMMAND_NAME.match(value) and value == value.lower(), (locale, key, value)
            else:
                assert 1 <= len(value) <= 100, (locale, key, value)


def test_an_error_is_english_for_the_cli_and_the_members_language_in_discord() -> None:
    error = InvalidRequest("errors.steps_range", high=8, got=12)
    assert str(error) == "Steps must be between 1 and 8 (got 12)."
    assert error.localized("zh-CN") == "步数必须在 1 到 8 之间（收到 12）。"
    assert error.localized("fr") == str(error)
    plain = AtelierError("a message that is no key")
    assert plain.key is None and plain.localized("zh-CN") == "a message that is no key"


def test_a_quota_refusal_says_when_it_resets_as_a_discord_timestamp() -> None:
    from datetime import datetime

    resets = datetime(2030, 1, 2)  # stored naive, in UTC
    error = QuotaExceeded("quota.daily_images", left=0, limit=4, needs=4, resets_at=resets)
    unix = int(datetime(2030, 1, 2, tzinfo=__import__("datetime").UTC).timestamp())
    assert error_text("en", error).endswith(f"Your quota resets <t:{unix}:R>.")
    assert f"<t:{unix}:R>" in error_text("zh-CN", error) and "重置" in error_text("zh-CN", error)


def _raised_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every ``raise SomeAtelierError("…")`` whose first argument is a plain string."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        call = node.exc
        name = getattr(call.func, "id", getattr(call.func, "attr", ""))
        if name in ERRORS and call.args:
            first = call.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
            elif isinstance(first, ast.JoinedStr):  # f"errors.{name}_range": any key of that shape
                parts = (re.escape(v.value) if isinstance(v, ast.Constant) else r"\w+" for v in first.values)
                found.append((node.lineno, "re:" + "".join(parts)))
    return found


def test_every_refusal_a_member_can_get_is_in_the_catalog() -> None:
    """Services, UI helpers and cogs raise by key, so every member reads them in their language; the CLI's
    own operator messages (bot/cli) may stay English."""
    keys = set(i18n.catalog(i18n.DEFAULT_LOCALE))
    problems = []
    for folder in ("bot/services", "bot/ui", "bot/cogs"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, text in _raised_literals(path):
                if text.startswith("re:"):
                    known = any(re.fullmatch(text[3:], key) for key in keys)
                else:
                    known = text in keys
                if not known:
                    problems.append(f"{path.relative_to(ROOT)}:{line}: {text!r} is not a catalog key")
    assert problems == []
