"""/edit, the 🪄 button, the message menus and /describe, end to end through the simulator."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
from PIL import Image
from sqlalchemy import select

from bot.db.models import Job, ModerationEvent, Rating, Usage
from tests.e2e.conftest import Harness
from tests.simulator import MessageState


def _is_result(message: MessageState) -> bool:
    return bool(message.attachments) and bool(message.embeds)


def _png(width: int = 96, height: int = 64, seed: int = 1) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _found_masks(harness: Harness) -> None:
    # The tiny CLIPSeg's map is noise around 0.5: a high threshold and a hard edge make a partial mask.
    harness.settings.mask_threshold = 0.7
    harness.settings.mask_dilate_px = 0
    harness.settings.mask_feather_px = 0


async def _jobs(harness: Harness) -> list[Job]:
    async with harness.services.db.sessions() as session:  # type: ignore[union-attr]
        return list((await session.execute(select(Job).order_by(Job.created_at))).scalars().all())


async def test_edit_repairs_a_region_then_edits_the_result_with_the_wand(running: Harness) -> None:
    _found_masks(running)
    source = _png()
    asked = await running.member.slash(
        "edit", image=("street.png", source, "image/png"), instruction="remove the car", seed=3
    )
    repaired = await asked.wait_followup(_is_result)
    # The result, and beside it the mask over the source as the embed's thumbnail.
    assert [a.filename.endswith(".png") for a in repaired.attachments] == [True, True]
    result = _decoded(repaired.attachments[0].data)
    assert result.shape == (64, 96, 3)
    preview = _decoded(repaired.attachments[1].data)
    assert max(preview.shape[:2]) <= 256
    embed = repaired.embeds[0]
    assert embed["thumbnail"]["url"] == f"attachment://{repaired.attachments[1].filename}"
    assert any(field["name"] == "Edit" and "remove" in field["value"] for field in embed["fields"])
    [job] = await _jobs(running)
    assert (job.kind, job.plan["mode"], job.plan["target"], job.member_prompt) == (
        "repair",
        "repair",
        "the car",
        "remove the car",
    )
    mask = np.asarray(Image.open(job.outcome["mask"]).convert("L"))
    assert np.array_equal(result[mask == 0], _decoded(source)[mask == 0])  # nothing else changed

    wand = next(cid for cid in repaired.custom_ids if cid.startswith("atelier:wand:"))
    opened = await running.admin.click(repaired, wand)
    assert (await opened.wait_ack())["type"] == 9  # the form
    submitted = await running.admin.submit_modal(opened, {"instruction": "make it winter"})
    edited = await submitted.wait_followup(_is_result)
    assert _decoded(edited.attachments[0].data).shape == (64, 96, 3)
    assert len(edited.attachments) == 1  # an instruction edit has no mask
    first, second = await _jobs(running)
    assert (second.kind, second.parent_job_id, second.user_id) == ("edit", first.id, running.admin.id)
    assert second.init_image == first.images[0].path  # the edit of the edit

    info = await (await running.admin.slash("info", job_id=second.id)).wait_ack()
    record = json.loads(info["data"]["content"].removeprefix("```json\n").removesuffix("\n```"))
    assert record["plan"]["mode"] == "instruction" and record["parent_job_id"] == first.id
    assert [(step["job_id"], step["mode"], step["plan"]["target"]) for step in record["lineage"]] == [
        (first.id, "repair", "the car")
    ]

    # Edited images are rated like any other.
    async with asyncio.timeout(10):
        while await running.bot.delivery.job_for_message(edited.id) is None:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
    await running.member.react(edited, "⭐")
    async with asyncio.timeout(10):
        while True:
            async with running.services.db.sessions() as session:  # type: ignore[union-attr]
                rating = (await session.execute(select(Rating))).scalar_one_or_none()
            if rating is not None:
                break
            await asyncio.sleep(0.05)
    assert (rating.job_id, rating.score) == (second.id, 5)


async def test_a_target_that_is_not_there_is_said_and_costs_nothing(running: Harness) -> None:
    running.settings.mask_threshold = 1.0  # nothing in the tiny model's map reaches it
    asked = await running.member.slash("edit", image=("street.png", _png(), "image/png"), instruction="remove the car")
    told = await asked.wait_followup(lambda m: "couldn't find" in m.content)
    assert "I couldn't find 'the car' in this image" in told.content
    [job] = await _jobs(running)
    assert job.status == "failed"
    async with running.services.db.sessions() as session:  # type: ignore[union-attr]
        usage = await session.get(Usage, job.id)
    assert usage is not None and usage.refunded_at is not None


async def test_a_refused_instruction_never_reaches_the_queue(running: Harness) -> None:
    asked = await running.member.slash("edit", image=("street.png", _png(), "image/png"), instruction="make her nude")
    refused = await asked.wait_followup(lambda m: m.ephemeral)
    assert "NSFW" in refused.content
    assert await _jobs(running) == []
    async with running.services.db.sessions() as session:  # type: ignore[union-attr]
        assert (await session.execute(select(ModerationEvent.prompt))).scalars().all() == ["make her nude"]


async def test_message_menus_and_describe_buttons(running: Harness) -> None:
    _found_masks(running)
    post = await running.member.post(
        running.guild.general, "my photo", files=[("photo.png", _png(seed=5), "image/png")]
    )

    opened = await running.member.message_command("Edit with Atelier", post)
    assert (await opened.wait_ack())["type"] == 9
    submitted = await running.member.submit_modal(opened, {"instruction": "replace the sky with fireworks"})
    repaired = await submitted.wait_followup(_is_result)
    assert _decoded(repaired.attachments[0].data).shape == (64, 96, 3)
    [edit] = await _jobs(running)
    assert (edit.kind, edit.plan["action"], edit.plan["replacement"], edit.model_prompt) == (
        "repair",
        "replace",
        "fireworks",
        "fireworks",
    )

    bare = await running.member.post(running.guild.general, "no picture here")
    nothing = await running.member.message_command("Describe with Atelier", bare)
    assert "no image" in (await nothing.wait_ack())["data"]["content"]

    described = await (await running.member.message_command("Describe with Atelier", post)).wait_followup(
        lambda m: bool(m.embeds) and m.embeds[0].get("title") == "What Atelier sees"
    )
    numbers = [cid for cid in described.custom_ids if cid.startswith("atelier:prompt:")]
    assert len(numbers) == 4
    description_job = (await _jobs(running))[-1]
    prompts = description_job.outcome["prompts"]
    assert len(set(prompts)) == 4 and all(prompt[:30] in described.embeds[0]["description"] for prompt in prompts)

    also = await (await running.member.slash("describe", image=("photo.png", _png(seed=5), "image/png"))).wait_followup(
        lambda m: bool(m.embeds) and m.embeds[0].get("title") == "What Atelier sees"
    )
    assert len([cid for cid in also.custom_ids if cid.startswith("atelier:prompt:")]) == 4

    imagined = await (await running.admin.click(described, numbers[1])).wait_followup(_is_result)
    assert imagined.embeds[0]["title"] == prompts[1][:256]
    newest = (await _jobs(running))[-1]
    assert (newest.kind, newest.member_prompt, newest.parent_job_id) == ("txt2img", prompts[1], description_job.id)

    # A caption the server's word list refuses makes no prompts, and the description is given back.
    banned = description_job.outcome["caption"].split()[0]
    await (await running.admin.slash("atelier config set", banned_words=banned)).wait_ack()
    refused = await (await running.member.message_command("Describe with Atelier", post)).wait_followup(
        lambda m: "can't describe" in m.content
    )
    assert "nothing was charged" in refused.content
    last = (await _jobs(running))[-1]
    async with running.services.db.sessions() as session:  # type: ignore[union-attr]
        usage = await session.get(Usage, last.id)
    assert last.kind == "describe" and usage is not None and usage.refunded_at is not None
