"""Checks on what the LLM adds, and the cut to the text encoder's window.

The member's words are never given to the LLM to rewrite: it only proposes details, and these guards
keep the ones that are plain visual description. A reply is rejected as a whole (and the service
retries, then falls back to the presets) when it is a refusal, talks about instructions, leaks the
system prompt, or is mostly not English words. Individual phrases are dropped when they are chatter,
repeat the member's words or an earlier phrase, or name a banned term.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bot.services.expansion.vocabulary import is_known

_META_PREFIXES = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"^(?:sure|okay|ok|certainly|of course|absolutely|great|alright|got it)\b[^,.:;!]*[,.:;!]\s*",
        r"^here(?:'s| is| are)\b[^:]*:\s*",
        r"^(?:the |an? )?(?:expanded |enhanced |improved |detailed |final |new |english |positive )*"
        r"(?:image )?(?:prompt|description|details|translation|rendering)\s*[:\-–—]\s*",
        r"^(?:output|answer|result|response|english|assistant)\s*[:\-–—]\s*",
    )
)
# Lines after these are about something else (a negative prompt, notes), never the details.
_STOP_LINES = re.compile(r"^\s*(?:\**\s*)?(?:negative|note|notes|explanation|why|style notes?)\b", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+")
_MARKDOWN = re.compile(r"\*\*|__|`+|^#+\s*|\[|\]")

# A refusal, or talk about instructions: the model was steered (or is stuck) and the whole reply goes.
_FAIL_MARKERS = (
    "as an ai",
    "language model",
    "i cannot",
    "i can't",
    "i can not",
    "i won't",
    "i will not",
    "i'm sorry",
    "i am sorry",
    "i apologize",
    "i'm unable",
    "i am unable",
    "unable to",
    "cannot help",
    "can't help",
    "not able to",
    "not appropriate",
    "inappropriate",
    "ignore previous",
    "ignore all",
    "ignore the",
    "ignore your",
    "previous instructions",
    "instruction",
    "system prompt",
    "system message",
    "you are now",
    "you are a",
    "developer mode",
    "jailbreak",
    "<request",
    "request>",
    "<|im_",
)
# Phrases that talk to the reader or about the task: dropped, the rest of the reply may be fine.
_EXPLANATION = re.compile(
    r"\b(?:i|i'm|i've|i'll|me|my|we|let's|you|your|prompt|prompts|request|note|hope|feel free|enjoy"
    r"|added|adding|adds|translation|translated|means|this (?:image|description|version|picture))\b",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*")
_MEASURE = re.compile(r"^\d+(?:mm|k|d|px|p|s|th|st|nd|rd|x)?$", re.IGNORECASE)
_VOWELS = frozenset("aeiouy")
_STOPWORDS = frozenset(
    "a an the of in on at by for with from to and or into onto over under its his her their is are".split()
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")
# Scripts written without spaces: one character is the unit the window is cut at.
_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_UNIT = re.compile(rf"\s*(?:[{_CJK}]|[^\W_{_CJK}]+(?:['’\-][^\W_{_CJK}]+)*|\S)")

MAX_PHRASE_WORDS = 8
MAX_WORD_LENGTH = 18


@dataclass(frozen=True)
class Review:
    """The phrases worth keeping from a reply, or why the reply as a whole was rejected."""

    phrases: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower().strip()


def is_english_like(text: str) -> bool:
    """True when the text is mostly Latin letters.

    Script, not language, decides: a Latin-script request (French, say) keeps its words verbatim at
    the front, as the image model reads it; only other scripts go through the English rendering.
    """
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) > 0.8


def strip_meta(text: str) -> str:
    text = _MARKDOWN.sub("", text.strip()).strip().strip("`*_#>").strip()
    changed = True
    while changed:
        changed = False
        for pattern in _META_PREFIXES:
            new = pattern.sub("", text, count=1).strip()
            if new != text:
                text, changed = new, True
        unquoted = text.strip("\"'“”‘’`«»").strip()
        if unquoted != text:
            text, changed = unquoted, True
    return text


def fail_marker(text: str) -> str | None:
    folded = fold(text).replace("’", "'")
    return next((marker for marker in _FAIL_MARKERS if marker in folded), None)


def leaks_instructions(reply: str, instructions: str, *, span: int = 5) -> bool:
    """True when any run of `span` consecutive words of the instructions appears in the reply."""
    words = re.findall(r"[a-z']+", fold(instructions))
    reply_words = " " + " ".join(re.findall(r"[a-z']+", fold(reply))) + " "
    return any(f" {' '.join(words[i : i + span])} " in reply_words for i in range(len(words) - span + 1))


def _word_is_plausible(word: str) -> bool:
    lowered = word.lower()
    if _MEASURE.match(lowered) or is_known(lowered):
        return True
    letters = re.sub(r"[^a-z]", "", lowered)
    if not letters or len(letters) > MAX_WORD_LENGTH or not (_VOWELS & set(letters)):
        return False
    # Runs no English word has: "brrr", "xqzt".
    return not re.search(r"(.)\1\1|[^aeiouy]{5,}", letters)


def _phrase_problem(phrase: str) -> str | None:
    """Why a phrase is not plain visual description ("gibberish" counts against the whole reply)."""
    tokens = _TOKEN.findall(phrase)
    if not tokens:
        return "gibberish"
    if len(tokens) > MAX_PHRASE_WORDS:
        return "sentence"
    # Letters and a few separators only: symbol soup around stray word pieces means gibberish.
    if sum(len(t) for t in tokens) < 0.7 * len(re.sub(r"\s", "", phrase)):
        return "gibberish"
    if not all(_word_is_plausible(t) for t in tokens):
        return "gibberish"
    lowered = [t.lower() for t in tokens]
    if len(set(lowered)) < len(lowered) - 1:  # "str str str", a model stuck in a loop
        return "gibberish"
    if not any(is_known(t) or _MEASURE.match(t) for t in lowered if t not in _STOPWORDS):
        return "gibberish"
    return None


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", fold(text)) if w not in _STOPWORDS}


def _candidate_text(raw: str) -> str:
    """The first paragraph of the reply, bullets and line breaks turned into commas."""
    lines: list[str] = []
    for line in re.split(r"\n\s*\n", raw.strip())[0].splitlines():
        if _STOP_LINES.match(line):
            break
        line = _BULLET.sub("", line).strip()
        if line:
            lines.append(line)
    return strip_meta(", ".join(lines))


def review_addition(
    raw: str,
    member_prompt: str,
    *,
    banned_terms: Iterable[str] = (),
    instructions: str | None = None,
    min_phrases: int = 2,
    min_known_share: float = 0.5,
) -> Review:
    """Review an LLM reply that should be comma-separated details for `member_prompt`."""
    if not raw or not raw.strip():
        return Review(reason="empty")
    if _CONTROL.search(raw):
        return Review(reason="gibberish: control characters")
    if (marker := fail_marker(raw)) is not None:
        return Review(reason=f"refusal or instructions: {marker!r}")
    if instructions and leaks_instructions(raw, instructions):
        return Review(reason="leaks the system prompt")
    text = _candidate_text(raw)
    if not is_english_like(text or "x"):
        return Review(reason="not English")
    folded_prompt = fold(member_prompt)
    if fold(text).startswith(folded_prompt) and folded_prompt:
        text = text[len(member_prompt) :]  # the model repeated the request: keep what follows
    prompt_words = _content_words(member_prompt)
    banned = [fold(b) for b in banned_terms if b.strip()]
    kept: list[str] = []
    seen: set[str] = set()
    gibberish = 0
    for piece in re.split(r"[,;|\n]|\.(?:\s|$)", text):
        phrase = strip_meta(piece).strip(" .!?:-–—\"'“”()").strip()
        key = fold(phrase)
        if not phrase or key in seen:
            continue
        words = _content_words(phrase)
        if not words or words <= prompt_words:
            continue  # the member's own words again: they are already at the front
        if _EXPLANATION.search(phrase):
            continue
        if any(re.search(rf"(?<!\w){re.escape(b)}(?!\w)", key) for b in banned):
            continue
        problem = _phrase_problem(phrase)
        if problem is not None:
            gibberish += problem == "gibberish"
            continue
        seen.add(key)
        kept.append(phrase)
    if gibberish > len(kept):
        return Review(kept, "gibberish: most phrases are not words")
    words = [t.lower() for phrase in kept for t in _TOKEN.findall(phrase) if t.lower() not in _STOPWORDS]
    if words and sum(is_known(w) for w in words) / len(words) < min_known_share:
        return Review(kept, "gibberish: too few known words")
    if len(kept) < min_phrases:
        return Review(kept, "too few usable phrases")
    return Review(kept)


def clean_addition(
    raw: str,
    member_prompt: str,
    *,
    banned_terms: Iterable[str] = (),
    instructions: str | None = None,
    min_phrases: int = 2,
) -> list[str] | None:
    """The details worth keeping from an LLM reply, or None when the reply fails the checks."""
    review = review_addition(
        raw, member_prompt, banned_terms=banned_terms, instructions=instructions, min_phrases=min_phrases
    )
    return review.phrases if review.ok else None


def review_rendering(rendering: str, original: str) -> str | None:
    """Why an English rendering of a non-English request is not usable, or None when it is.

    Verbatim-front cannot hold here (the image model's text encoder reads English), so the check is
    that the rendering is a short, plain English description: English words, no chatter, no refusal,
    and not much longer than the request it renders.
    """
    text = strip_meta(rendering)
    if not text:
        return "empty"
    if _CONTROL.search(text):
        return "gibberish: control characters"
    if (marker := fail_marker(text)) is not None:
        return f"refusal or instructions: {marker!r}"
    if not is_english_like(text):
        return "not English"
    if _EXPLANATION.search(text):
        return "chatter"
    tokens = _TOKEN.findall(text)
    if not tokens or len(tokens) > 30 or len(text) > 4 * len(original) + 60:
        return "not a rendering of the request"
    if not all(_word_is_plausible(t) for t in tokens):
        return "gibberish"
    content = [t.lower() for t in tokens if t.lower() not in _STOPWORDS]
    if content and sum(is_known(w) for w in content) / len(content) < 0.5:
        return "gibberish: too few known words"
    return None


def _most_that_fit(high: int, fits: Callable[[int], bool]) -> int:
    """The largest n in 0..high with fits(n), by halving: fits(0) holds, and once false it stays false
    (a prompt's tokens only grow as words are added). A try is a tokenizer call."""
    low = 0  # invariant: fits(low), and not fits(n) for any n above high
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def cut_to_window(text: str, count_tokens: Callable[[str], int], window: int) -> str:
    """The longest prefix of `text`, cut between words (between characters for CJK), that fits."""
    text = text.strip()
    if count_tokens(text) <= window:
        return text
    units = _UNIT.findall(text)

    def prefix(taken: int) -> str:
        return "".join(units[:taken]).rstrip(" ,;")

    return prefix(_most_that_fit(len(units), lambda taken: count_tokens(prefix(taken)) <= window))


def fit_to_window(
    front: str, details: list[str], count_tokens: Callable[[str], int], window: int
) -> tuple[str, list[str]]:
    """The front (cut only if it alone is past the window), then whole details while they fit.

    Each try is a tokenizer call on every request's path, and a preset adds eight or more details:
    all of them usually fit, so that is tried first, and otherwise the longest prefix that fits is
    found by halving, as cut_to_window does."""
    text = cut_to_window(front, count_tokens, window)

    def joined(taken: int) -> str:
        return ", ".join([text, *details[:taken]] if text else details[:taken])

    def fits(taken: int) -> bool:
        return count_tokens(joined(taken)) <= window

    taken = len(details) if fits(len(details)) else _most_that_fit(len(details) - 1, fits)
    return joined(taken), details[:taken]


def approximate_tokens(text: str) -> int:
    """A CLIP-like count without a tokenizer: start and end tokens, then a token per short word, per
    punctuation mark and per CJK character, and one more per 8 letters of a long word."""
    count = 2
    for unit in _UNIT.findall(text):
        unit = unit.strip()
        count += 1 + (len(unit) - 1) // 8 if unit[:1].isalnum() and unit.isascii() else 1
    return count
