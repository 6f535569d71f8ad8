from __future__ import annotations

from bot.services.moderation import check_prompt


def test_ordinary_prompts_pass() -> None:
    assert check_prompt("a fox in the snow, golden hour").allowed
    assert check_prompt("Sussex landscape with essex cottages").allowed  # no substring false positives


def test_builtin_list_refuses_whatever_the_server_allows() -> None:
    assert not check_prompt("loli art", nsfw_allowed=True).allowed


def test_server_words_are_whole_words_and_case_insensitive() -> None:
    verdict = check_prompt("A CLOWN at a party", banned_words=["clown"])
    assert not verdict.allowed and "clown" in verdict.reason
    assert check_prompt("clownfish in a reef", banned_words=["clown"]).allowed


def test_nsfw_needs_the_policy_and_an_nsfw_channel() -> None:
    assert not check_prompt("nude figure study").allowed
    assert check_prompt("nude figure study", nsfw_allowed=True).allowed


def test_lookalike_characters_do_not_slip_through() -> None:
    assert not check_prompt("ｎｕｄｅ portrait").allowed


def test_accents_are_folded_on_both_sides_of_a_server_word() -> None:
    assert not check_prompt("Crème brûlée", banned_words=["CREME"]).allowed
    assert not check_prompt("creme brulee", banned_words=["CRÈME"]).allowed
    assert check_prompt("cream", banned_words=["CRÈME"]).allowed
