"""The deterministic expander, the service's sources, caching, seeding and the window: no model needed."""

from __future__ import annotations

import pytest

from bot.services.expansion import STYLES, ExpansionConfig, ExpansionService
from bot.services.expansion.guards import approximate_tokens, cut_to_window, fit_to_window
from bot.services.expansion.presets import SUBJECT_KEYWORDS, find_style, merge_negative, subjects_of

PROMPT = "a fox in the snow"


def presets(**overrides: object) -> ExpansionService:
    return ExpansionService(ExpansionConfig(mode="presets", **overrides))  # type: ignore[arg-type]


# ---------------------------------------------------------------- presets


def test_at_least_ten_curated_styles_each_complete() -> None:
    assert len(STYLES) >= 10
    for name in ("photographic", "cinematic", "anime", "oil painting", "watercolor", "pixel art", "3d render"):
        assert name in STYLES
    for preset in STYLES.values():
        assert len(preset.modifiers) >= 5 and preset.description
        assert "blurry" in preset.negative or "blurry" in preset.modifiers[0]
        # Every style knows what suits each kind of subject.
        assert set(preset.subject_modifiers) == set(SUBJECT_KEYWORDS), preset.name


def test_subjects_are_recognised_from_keywords() -> None:
    assert subjects_of("portrait of an old fisherman") == ["portrait"]
    assert subjects_of("two foxes on a hill") == ["animal", "landscape"]
    assert subjects_of("a castle above the clouds") == ["architecture"]
    assert subjects_of("a bowl of soup") == ["food"]
    assert subjects_of("an abstract shape") == []


@pytest.mark.parametrize(
    ("prompt", "category"),
    [
        ("portrait of an old woman", "portrait"),
        ("a mountain lake at dawn", "landscape"),
        ("a sleeping cat", "animal"),
        ("a gothic cathedral", "architecture"),
        ("a slice of cake", "food"),
    ],
)
def test_subject_aware_modifiers_are_chosen(prompt: str, category: str) -> None:
    service = presets()
    for style in ("photographic", "cinematic", "watercolor"):
        result = service.expand_sync(prompt, style=style, seed=5)
        subject_phrases = STYLES[style].subject_modifiers[category]
        assert any(phrase in result.added for phrase in subject_phrases), (style, result.added)


def test_style_names_are_forgiving_but_unknown_ones_are_a_clear_error() -> None:
    assert find_style("Oil_Painting").name == "oil painting"
    assert find_style("3d").name == "3d render"
    assert find_style(None).name == "photographic"
    with pytest.raises(ValueError, match=r"Unknown style .*vaporwave.*Styles: 3d render, anime"):
        find_style("vaporwave")


async def test_unknown_style_fails_through_the_service_too() -> None:
    with pytest.raises(ValueError, match="Styles: "):
        await presets().expand(PROMPT, style="vaporwave-ultra")


# ---------------------------------------------------------------- the deterministic source


async def test_deterministic_expansion_keeps_the_words_verbatim_in_front() -> None:
    result = await presets().expand("A Fox in the SNOW!", style="watercolor", seed=1)
    assert result.model_prompt.startswith("A Fox in the SNOW!, watercolor painting, ")
    assert result.model_prompt == f"A Fox in the SNOW!, {result.added}"
    assert (result.source, result.style, result.member_prompt) == ("fallback", "watercolor", "A Fox in the SNOW!")
    assert result.tokens == approximate_tokens(result.model_prompt) <= 77


async def test_seeded_reproducible_and_varied() -> None:
    first = await presets().expand(PROMPT, style="cinematic", seed=1)
    again = await presets().expand(PROMPT, style="cinematic", seed=1)  # a fresh service: no cache involved
    assert again.model_prompt == first.model_prompt
    variants = {(await presets().expand(PROMPT, style="cinematic", seed=s)).model_prompt for s in range(8)}
    assert len(variants) > 3


async def test_results_are_cached_by_prompt_style_model_and_seed() -> None:
    service = presets()
    first = await service.expand(PROMPT, style="anime", seed=2)
    assert await service.expand(PROMPT, style="anime", seed=2) is first
    assert service.counters["cache_hits"] == 1
    assert await service.expand(PROMPT, style="anime", seed=3) is not first
    assert await service.expand(PROMPT, style="comic", seed=2) is not first
    assert service.counters["cache_hits"] == 1


async def test_cache_is_bounded() -> None:
    service = presets(cache_size=3)
    for seed in range(5):
        await service.expand(PROMPT, seed=seed)
    assert len(service._cache) == 3


async def test_non_english_stays_as_typed_on_the_deterministic_path() -> None:
    result = await presets().expand("一只黑猫坐在窗台上", seed=3)
    assert result.member_prompt == "一只黑猫坐在窗台上"
    assert result.model_prompt.startswith("一只黑猫坐在窗台上, professional photograph")


# ---------------------------------------------------------------- raw, negative


async def test_raw_skips_expansion_and_keeps_only_the_members_negative() -> None:
    result = await presets().expand(PROMPT, style="anime", raw=True, negative="text, Text, hands")
    assert (result.model_prompt, result.source, result.style, result.added) == (PROMPT, "raw", None, "")
    assert result.negative == "text, hands"
    assert (await presets().expand(PROMPT, raw=True)).negative == ""


async def test_raw_is_cut_to_the_window_between_words() -> None:
    long_prompt = " ".join(f"word{i}" for i in range(120))
    result = await presets().expand(long_prompt, raw=True)
    assert long_prompt.startswith(result.model_prompt) and long_prompt[len(result.model_prompt)] == " "
    assert result.tokens <= 77 < approximate_tokens(long_prompt)


def test_negative_merges_member_first_without_duplicates() -> None:
    assert merge_negative("blurry, text, watermark", "Text, hands") == "Text, hands, blurry, watermark"
    assert merge_negative("blurry, text", None) == "blurry, text"
    assert merge_negative("", " , ") == ""


async def test_style_negative_is_merged_with_the_members() -> None:
    result = await presets().expand(PROMPT, style="anime", negative="extra fingers, blurry")
    assert result.negative.startswith("extra fingers, blurry, low quality")
    assert result.negative.count("blurry") == 1 and "photorealistic" in result.negative


# ---------------------------------------------------------------- the window


def test_window_keeps_the_front_whole_and_adds_whole_details_while_they_fit() -> None:
    details = [f"detail number {i}" for i in range(40)]
    text, used = fit_to_window(PROMPT, details, approximate_tokens, 30)
    assert text == ", ".join([PROMPT, *used])
    assert approximate_tokens(text) <= 30 < approximate_tokens(f"{text}, {details[len(used)]}")


def test_window_takes_as_many_details_as_adding_them_one_by_one_would() -> None:
    details = [f"detail {'word ' * (i % 4)}{i}" for i in range(12)]
    for window in range(4, 70):
        expected, used = cut_to_window(PROMPT, approximate_tokens, window), []
        for detail in details:
            if approximate_tokens(f"{expected}, {detail}") > window:
                break
            expected, used = f"{expected}, {detail}", [*used, detail]
        assert fit_to_window(PROMPT, details, approximate_tokens, window) == (expected, used), window


def test_window_counts_once_more_than_the_front_when_every_detail_fits() -> None:
    counted: list[str] = []

    def count(text: str) -> int:
        counted.append(text)
        return approximate_tokens(text)

    details = [f"detail {i}" for i in range(10)]
    text, used = fit_to_window(PROMPT, details, count, 200)
    assert used == details and text == ", ".join([PROMPT, *details])
    assert counted == [PROMPT, text]  # the front, then everything at once: not a call per detail


def test_a_front_past_the_window_is_cut_and_nothing_added() -> None:
    long_prompt = "word " * 100
    text, used = fit_to_window(long_prompt, ["soft light"], approximate_tokens, 77)
    assert used == [] and long_prompt.startswith(text) and approximate_tokens(text) == 77


def test_cjk_is_cut_between_characters() -> None:
    text = "一只黑猫坐在窗台上" * 20
    cut = cut_to_window(text, approximate_tokens, 20)
    assert text.startswith(cut) and approximate_tokens(cut) <= 20 and len(cut) == 18


async def test_every_preset_result_fits_a_small_window() -> None:
    service = presets(max_prompt_tokens=24)
    for style in STYLES:
        result = await service.expand("portrait of a knight on a horse in a misty forest", style=style, seed=7)
        assert result.tokens <= 24 and result.model_prompt.startswith(
            "portrait of a knight on a horse in a misty forest"
        )


async def test_raw_mode_never_expands_and_unknown_modes_are_refused() -> None:
    result = await ExpansionService(ExpansionConfig(mode="raw")).expand(PROMPT, style="anime", negative="text")
    assert (result.model_prompt, result.source, result.negative) == (PROMPT, "raw", "text")
    with pytest.raises(ValueError, match="llm, presets, raw"):
        ExpansionService(ExpansionConfig(mode="magic"))
