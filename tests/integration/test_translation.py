"""Requests in another script where no LLM runs: a tiny MarianMT model of the real class, loaded with
from_pretrained, renders them in English; or the member is told their language is not supported."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.services.expansion import ExpansionConfig, ExpansionService
from bot.services.expansion.translation import MarianTranslator, RequestTranslator, UnsupportedLanguage, script_language
from engine.tiny_marian import build_tiny_marian

CHINESE = "一只黑猫坐在窗台上"


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_marian(tmp_path_factory.mktemp("marian") / "tiny-marian")


def test_the_script_says_which_language_a_request_is_in() -> None:
    assert script_language(CHINESE) == "zh"
    assert script_language("猫がいる") == "ja"  # kana: Japanese, not Chinese
    assert script_language("고양이") == "ko"
    assert script_language("чёрная кошка") is None


async def test_presets_render_a_chinese_request_in_english_and_keep_the_members_words(tiny_marian: Path) -> None:
    config = ExpansionConfig(mode="presets", translation="marian", translation_model=str(tiny_marian))
    service = ExpansionService(config)
    try:
        english = await service.expand("a black cat on a windowsill", seed=1)
        assert service.translator.model._model is None  # English needs no model: none was loaded
        assert english.model_prompt.startswith("a black cat on a windowsill, ")

        result = await service.expand(CHINESE, style="watercolor", seed=1)
        assert result.member_prompt == CHINESE
        assert result.model_prompt.startswith("black cat, ") and CHINESE not in result.model_prompt
        assert "watercolor" in result.model_prompt

        with pytest.raises(UnsupportedLanguage):
            await service.expand("чёрная кошка на подоконнике", seed=1)  # no model for this language
    finally:
        await service.aclose()


async def test_refuse_tells_the_member_and_loads_nothing() -> None:
    service = ExpansionService(ExpansionConfig(mode="presets", translation="refuse"))
    try:
        with pytest.raises(UnsupportedLanguage):
            await service.expand(CHINESE, seed=1)
        assert (await service.expand("a fox", seed=1)).model_prompt.startswith("a fox")
    finally:
        await service.aclose()


async def test_an_unusable_translation_is_refused_not_passed_on(tiny_marian: Path) -> None:
    class Chatty(MarianTranslator):
        def translate_sync(self, text: str) -> str:
            return "Sure! Here is the translation you asked for, as an AI language model I think " * 3

    translator = RequestTranslator("marian", Chatty(str(tiny_marian)))
    with pytest.raises(UnsupportedLanguage):
        await translator.english(CHINESE)
    translator.close()
