"""Checks on what the LLM adds. The member's words are never given to the LLM to rewrite: it only
proposes details, and these guards keep the ones that are plain visual description."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable

_META_PREFIXES = (
    r"^(?:sure|okay|ok|certainly|of course|absolutely|great|alright)\b[^,.:;!]*[,.:;!]\s*",
    r"^here(?:'s| is| are)\b[^:]*:\s*",
    r"^(?:the )?(?:expanded |enhanced |improved |detailed |final )?(?:image )?prompt\s*[:\-]\s*",
    r"^(?:details|output|answer|result|response)\s*[:\-]\s*",
)
# Phrases that mean the model talked about the task instead of describing an image, or that the
# request tried to steer it.
_CHATTER = (
    "ignore",
    "instruction",
    "system prompt",
    "you are",
    "as an ai",
    "language model",
    "i cannot",
    "i can't",
    "i'm sorry",
    "sorry",
    "i hope",
    "let me know",
    "this prompt",
    "the prompt",
    "the request",
    "assistant",
    "note:",
    "here is",
    "here's",
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_VOWELS = set("aeiouy")


def fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower().strip()


def is_english_like(text: str) -> bool:
    """True when the text is mostly Latin letters: a non-English request needs translating first."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) > 0.8


def _strip_meta(text: str) -> str:
    text = text.strip().strip("`*_#>").strip()
    changed = True
    while changed:
        changed = False
        for pattern in _META_PREFIXES:
            new = re.sub(pattern, "", text, flags=re.IGNORECASE).strip()
            if new != text:
                text, changed = new, True
    return text.strip().strip("\"'“”‘’`").strip()


def _phrase_is_description(phrase: str) -> bool:
    words = _WORD.findall(phrase)
    if not words or len(words) > 8:
        return False
    # Letters and a few separators only: digits-and-symbol soup or stray tokens mean gibberish.
    if sum(len(w) for w in words) < 0.7 * len(phrase.replace(" ", "")):
        return False
    for word in words:
        lowered = word.lower()
        if len(lowered) > 16 or not (_VOWELS & set(lowered)):
            return False
    return True


def clean_addition(
    raw: str,
    member_prompt: str,
    *,
    banned_terms: Iterable[str] = (),
    min_phrases: int = 2,
) -> list[str] | None:
    """The details worth keeping from an LLM reply, or None when the reply fails the checks."""
    if not raw or not raw.strip():
        return None
    first_block = re.split(r"\n\s*\n", raw.strip())[0]
    text = " ".join(line.strip() for line in first_block.splitlines())
    text = _strip_meta(text)
    folded_prompt = fold(member_prompt)
    if fold(text).startswith(folded_prompt):
        text = text[len(member_prompt) :]  # the model repeated the request: keep what follows
    banned = [fold(b) for b in banned_terms if b.strip()]
    kept: list[str] = []
    seen: set[str] = set()
    for piece in re.split(r"[,;\n]|\.\s", text):
        phrase = _strip_meta(piece).strip(" .!?:-–—\"'“”").strip()
        key = fold(phrase)
        if not phrase or key in seen or key in folded_prompt:
            continue
        if any(marker in key for marker in _CHATTER):
            return None  # talking about the task, not the picture: reject the whole reply
        if any(re.search(rf"(?<!\w){re.escape(b)}(?!\w)", key) for b in banned):
            continue
        if not _phrase_is_description(phrase):
            continue
        seen.add(key)
        kept.append(phrase)
    if len(kept) < min_phrases:
        return None
    return kept


def fit_to_window(
    front: str, details: list[str], count_tokens: Callable[[str], int], window: int
) -> tuple[str, list[str]]:
    """Append details while the whole prompt fits the text encoder's window; the front is never cut."""
    used: list[str] = []
    text = front
    for detail in details:
        candidate = f"{text}, {detail}" if text else detail
        if count_tokens(candidate) > window:
            break
        text = candidate
        used.append(detail)
    return text, used


def approximate_tokens(text: str) -> int:
    """CLIP-like count without a tokenizer: words and punctuation, plus start and end tokens."""
    return len(re.findall(r"\w+|[^\w\s]", text)) + 2
