"""Atelier in Simplified Chinese, through the real client: the synced commands carry zh-CN names and
descriptions for everything, and a member whose Discord is in Chinese reads every reply in Chinese."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from tests.e2e.conftest import Harness
from tests.simulator import MessageState

ZH = "zh-CN"
CJK = re.compile(r"[\u4e00-\u9fff]")


def _is_result(message: MessageState) -> bool:
    return bool(message.attachments) and bool(message.embeds)


def _nodes(commands: list[dict[str, Any]], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for node in commands:
        where = f"{path} {node['name']}".strip()
        yield where, node
        yield from _nodes(node.get("options") or [], where)


async def test_every_command_option_and_choice_is_synced_with_chinese(running: Harness) -> None:
    synced = running.sim.commands[None]
    # A message or user menu (command type 3 or 2) has a name and no description, in Discord as here.
    menus = [command for command in synced if command.get("type", 1) != 1]
    missing = [
        f"{menu['name']}: name_localizations" for menu in menus if not (menu.get("name_localizations") or {}).get(ZH)
    ]
    for where, node in _nodes([command for command in synced if command.get("type", 1) == 1]):
        for field in ("name_localizations", "description_localizations"):
            if not (node.get(field) or {}).get(ZH):
                missing.append(f"{where}: {field}")
        for choice in node.get("choices") or []:
            if not (choice.get("name_localizations") or {}).get(ZH):
                missing.append(f"{where}: choice {choice['value']}")
    assert missing == []
    [imagine] = [c for c in synced if c["name"] == "imagine"]
    assert imagine["name_localizations"][ZH] == "画图"
    assert set(imagine["name_localizations"]) == {ZH}  # no guesses for languages Atelier does not speak


async def test_a_chinese_member_reads_refusals_help_and_results_in_chinese(running: Harness) -> None:
    typo = await (await running.member.slash("imagine", prompt="一只狐狸", size="huge", locale=ZH)).wait_ack()
    assert typo["data"]["content"] == "尺寸“huge”不是 宽x高 的格式，例如 512x768。"
    assert typo["data"]["flags"] & 64

    shown = await (await running.member.slash("help", locale=ZH)).wait_ack()
    assert shown["data"]["embeds"][0]["title"] == "Atelier：几个词就能画出图像"
    assert CJK.search(shown["data"]["embeds"][0]["description"])

    styles = await running.member.autocomplete("imagine", "style", "水", prompt="一只狐狸", locale=ZH)
    assert styles == [{"name": "水彩 (watercolor)", "value": "watercolor"}]

    asked = await running.member.slash("imagine", prompt="a fox in the snow", seed=2, locale=ZH)
    result = await asked.wait_followup(_is_result)
    fields = {f["name"]: f["value"] for f in result.embeds[0]["fields"]}
    assert {"种子", "模型", "尺寸"} <= set(fields) and fields["种子"] == "2"
    assert "扩写后的提示词（细节来自 Atelier 的风格预设）" in fields  # not "fallback"
    assert result.embeds[0]["footer"]["text"].startswith("任务 ")

    delete = next(c for c in result.custom_ids if c.startswith("atelier:delete:"))
    refused = await (await running.admin.click(result, delete, locale=ZH)).wait_ack()
    assert refused["data"]["content"] == "只有请求这张图的成员或管理员可以删除它。"

    # 🔍's private answer, and the 🪄 form with the status of the edit it queues, in Chinese too.
    explain = next(c for c in result.custom_ids if c.startswith("atelier:explain:"))
    explained = await running.member.click(result, explain, locale=ZH)
    words = await explained.sim.wait_for(
        lambda: next((m for m in explained.visible_messages if m.embeds), None), timeout=60
    )
    assert words.content == "正在绘制热力图：用同一个种子重新生成这张图…"
    fields = {f["name"]: f["value"] for f in words.embeds[0]["fields"]}
    assert words.embeds[0]["title"] == "这张图为什么是这个样子" and fields["你的原话"] == "a fox in the snow"
    assert fields["运行参数"].startswith("种子 ") and "第 1 /" in fields["评分"]

    wand = next(c for c in result.custom_ids if c.startswith("atelier:wand:"))
    opened = await running.member.click(result, wand, locale=ZH)
    assert (await opened.wait_ack())["type"] == 9
    assert opened.modal is not None and opened.modal["title"] == "用 Atelier 编辑"
    labels = [c["label"] for row in opened.modal["components"] for c in row["components"]]
    count = len(result.custom_ids and [c for c in result.custom_ids if c.startswith("atelier:upscale:")])
    assert labels == ["要改什么？"] + ([f"第几张图（1–{count}）"] if count > 1 else [])
    submitted = await running.member.submit_modal(opened, {"instruction": "改成冬天"})
    status = await submitted.wait_followup(lambda m: "整张图的编辑" in m.content)
    assert status.content.startswith("🪄 **改成冬天**")


async def test_the_waiting_status_and_a_quota_refusal_are_in_chinese(running: Harness) -> None:
    await (await running.admin.slash("atelier quota set", images_per_day=4, member=running.member)).wait_ack()
    first = await running.member.slash("imagine", prompt="a fox", locale=ZH)
    await running.sim.wait_for(lambda: first.original and "排队中" in first.original.content, 10)
    await first.wait_followup(_is_result)
    second = await running.member.slash("imagine", prompt="a fox", locale=ZH)
    line = (await second.wait_followup(lambda m: m.ephemeral)).content
    assert line.startswith("已达每日上限") and re.search(r"<t:\d+:R>", line)


async def test_an_unsupported_member_language_falls_back_to_the_servers(harness: Harness) -> None:
    harness.guild.preferred_locale = ZH
    async with harness.sim.connect(harness.new_bot()):
        answer = await (await harness.member.slash("imagine", prompt="x", size="huge", locale="fr")).wait_ack()
        assert answer["data"]["content"].startswith("尺寸")
        english = await (await harness.member.slash("imagine", prompt="x", size="huge", locale="en-GB")).wait_ack()
        assert english["data"]["content"].startswith("Size")  # the member chose a language Atelier speaks


async def test_a_chinese_request_is_translated_for_the_model_and_kept_for_the_member(running: Harness) -> None:
    from sqlalchemy import select

    from bot.db.models import Job

    asked = await running.member.slash("imagine", prompt="一只黑猫坐在窗台上", locale=ZH)
    result = await asked.wait_followup(_is_result)
    assert result.embeds[0]["title"] == "一只黑猫坐在窗台上"
    async with running.services.db.sessions() as session:  # type: ignore[union-attr]
        [job] = (await session.execute(select(Job))).scalars().all()
    assert job.member_prompt == "一只黑猫坐在窗台上"
    assert job.model_prompt.startswith("black cat, ")  # the tiny MarianMT model's English


async def test_with_translation_refused_the_member_is_told_and_nothing_is_queued(harness: Harness) -> None:
    from sqlalchemy import func, select

    from bot.db.models import Job

    harness.settings.translation = "refuse"
    async with harness.sim.connect(harness.new_bot()):
        asked = await harness.member.slash("imagine", prompt="一只黑猫坐在窗台上", locale=ZH)
        line = (await asked.wait_followup(lambda m: m.ephemeral)).content
        assert line == "Atelier 暂时无法读取这种语言的请求；请用英语书写。"
        async with harness.services.db.sessions() as session:  # type: ignore[union-attr]
            assert (await session.execute(select(func.count()).select_from(Job))).scalar_one() == 0
