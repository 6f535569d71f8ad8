"""Prompt moderation: a built-in list plus each server's own words. Refused prompts never reach the queue."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bot import i18n

# Kept short and unambiguous: false positives on a busy server annoy more than they protect.
BUILTIN_PATTERNS: tuple[str, ...] = (
    r"\bchild(?:ren)?\s+(?:porn|nude|naked|sexual)",
    r"\b(?:loli|shota)\b",
    r"\bcsam\b",
    r"\bcp\s+(?:porn|pics?)\b",
    r"\bunderage\s+(?:sex|nude|naked|porn)",
)
NSFW_PATTERNS: tuple[str, ...] = (
    r"\b(?:nsfw|nude|nudity|naked|porn\w*|hentai|sex|sexual|explicit|topless|genitals?)\b",
)


def _normalise(text: str) -> str:
    # Fold accents and full-width forms so "ｎｕｄｅ" or "nüde" cannot slip past a word list.
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    key: str = ""  # the catalog key of the member's explanation
    params: dict[str, Any] = field(default_factory=dict)
    rule: str = ""  # which rule refused it, for the server's admins: "builtin:N", "banned_word:W", "nsfw"

    @property
    def reason(self) -> str:
        """In English, for the moderation log."""
        return i18n.text(i18n.DEFAULT_LOCALE, self.key, **self.params) if self.key else ""


def check_prompt(text: str, *, banned_words: Iterable[str] = (), nsfw_allowed: bool = False) -> Verdict:
    folded = _normalise(text) + " " + text.casefold()
    for number, pattern in enumerate(BUILTIN_PATTERNS, start=1):
        if re.search(pattern, folded):
            return Verdict(False, "moderation.not_allowed", rule=f"builtin:{number}")
    for listed in banned_words:
        # Both sides folded: a "CRÈME" ban catches "creme", and a "CREME" ban catches "Crème".
        word = listed.strip()
        variants = {w for w in (_normalise(word), word.casefold()) if w}
        if any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", folded) for w in variants):
            return Verdict(False, "moderation.banned_word", {"word": word[:50]}, f"banned_word:{word[:50]}")
    if not nsfw_allowed:
        for pattern in NSFW_PATTERNS:
            if re.search(pattern, folded):
                return Verdict(False, "moderation.nsfw", rule="nsfw")
    return Verdict(True)
