"""English renderings of requests in other scripts where no LLM runs (presets mode, or the LLM's
fallback): a small MarianMT model (Helsinki-NLP/opus-mt-zh-en and the like), loaded once, in a thread
of its own. The image model's text encoder reads English; the member's own words stay in the record.

The setting chooses what happens to such a request: ``marian`` translates it, ``refuse`` tells the
member their language is not supported, ``keep`` (the library's default) passes it on as typed.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bot.services.expansion.guards import is_english_like, review_rendering, strip_meta

log = logging.getLogger(__name__)

TRANSLATION_MODES = ("marian", "refuse", "keep")
MAX_SOURCE_TOKENS = 256


class UnsupportedLanguage(Exception):
    """Atelier cannot render this request in English (no model for its language, or the translation
    was not usable): the member is told, nothing is queued or charged."""


def script_language(text: str) -> str | None:
    """The language a request's script points to: "zh" for Chinese characters without kana, "ja" with
    kana, "ko" for Hangul; None for any other script. Latin text is not asked about (is_english_like)."""
    letters = [c for c in text if c.isalpha()]
    names = [unicodedata.name(c, "") for c in letters]
    if any(n.startswith(("HIRAGANA", "KATAKANA")) for n in names):
        return "ja"
    if any(n.startswith("HANGUL") for n in names):
        return "ko"
    if names and sum(n.startswith("CJK") for n in names) / len(names) > 0.5:
        return "zh"
    return None


class MarianTranslator:
    """One MarianMT model for one source language, loaded on first use with from_pretrained (a hub id or
    a local directory), run on its own thread so the event loop never waits on it."""

    def __init__(self, model: str, *, language: str = "zh", device: str = "cpu", max_new_tokens: int = 60) -> None:
        self.model_id = model
        self.language = language
        self.device = device
        self.max_new_tokens = max_new_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atelier-translate")

    def _load(self) -> None:
        from transformers import MarianMTModel, MarianTokenizer

        log.info("loading the translation model %s", self.model_id)
        self._tokenizer = MarianTokenizer.from_pretrained(self.model_id)
        self._model = MarianMTModel.from_pretrained(self.model_id).to(self.device).eval()

    def translate_sync(self, text: str) -> str:
        import torch

        if self._model is None:
            self._load()
        batch = self._tokenizer([text], return_tensors="pt", truncation=True, max_length=MAX_SOURCE_TOKENS)
        with torch.inference_mode():
            output = self._model.generate(**batch.to(self.device), max_new_tokens=self.max_new_tokens)
        return self._tokenizer.batch_decode(output, skip_special_tokens=True)[0].strip()

    async def translate(self, text: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.translate_sync, text)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class RequestTranslator:
    """What the presets do with a request in another script, by the ``mode`` setting."""

    def __init__(self, mode: str = "keep", model: MarianTranslator | None = None) -> None:
        if mode not in TRANSLATION_MODES:
            raise ValueError(f"translation is one of {', '.join(TRANSLATION_MODES)}, not {mode!r}")
        if mode == "marian" and model is None:
            raise ValueError("translation 'marian' needs a model")
        self.mode = mode
        self.model = model

    async def english(self, prompt: str) -> str | None:
        """The English to put at the front of the prompt; None to keep the member's words as typed.
        Raises UnsupportedLanguage where the member must be told."""
        if is_english_like(prompt) or self.mode == "keep":
            return None
        if self.mode == "refuse" or self.model is None or script_language(prompt) != self.model.language:
            raise UnsupportedLanguage(script_language(prompt) or "unknown")
        try:
            rendering = strip_meta(await self.model.translate(prompt)).rstrip(" .,;")
        except Exception as error:
            log.exception("the translation model failed")
            raise UnsupportedLanguage(self.model.language) from error
        problem = review_rendering(rendering, prompt)
        if problem is not None:
            log.info("translation of a request rejected (%s): %r", problem, rendering[:200])
            raise UnsupportedLanguage(self.model.language)
        return rendering

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
