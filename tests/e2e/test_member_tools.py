"""Member tools end to end: settings, the edit-prompt form, attachments, variations and upscales."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from bot.db.models import Image as Image_
from bot.db.models import Job
from tests.e2e.conftest import Harness
from tests.simulator import MessageState


def _is_result(message: MessageState) -> bool:
    return bool(message.attachments) and bool(message.embeds)


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def _jobs(harness: Harness) -> list[Job]:
    async with harness.services.db.sessions() as session:  # type: ignore[union-attr]
        return list((await session.execute(select(Job).order_by(Job.created_at))).scalars().all())


async def test_member_settings_shape_later_requests(running: Harness) -> None:
    saved = await (await running.member.slash("settings", style="anime", count=1, aspect="2:1")).wait_ack()
    assert "style: anime" in saved["data"]["content"] and saved["data"]["flags"] & 64
    bad = await (await running.member.slash("settings", style="vaporwave-ultra")).wait_ack()
    assert "Unknown style" in bad["data"]["content"]

    result = await (await running.member.slash("imagine", prompt="a fox")).wait_followup(_is_result)
    [job] = await _jobs(running)
    assert (job.style, job.count) == ("anime", 1)
    assert (job.width, job.height) == (128, 64)  # the member's 2:1, with the short side at the 64 px minimum
    assert "anime style" in job.model_prompt
    assert result.embeds[0]["title"] == "a fox"


async def test_edit_prompt_form_starts_a_new_job(running: Harness) -> None:
    first = await running.member.slash("imagine", prompt="a fox", seed=5)
    result = await first.wait_followup(_is_result)
    edit = next(cid for cid in result.custom_ids if cid.startswith("atelier:edit:"))
    opened = await running.member.click(result, edit)
    assert (await opened.wait_ack())["type"] == 9  # a modal
    submitted = await running.member.submit_modal(opened, {"prompt": "a fox in a top hat"})
    edited = await submitted.wait_followup(_is_result)
    assert edited.embeds[0]["title"] == "a fox in a top hat"
    jobs = await _jobs(running)
    assert jobs[1].parent_job_id == jobs[0].id and jobs[1].member_prompt == "a fox in a top hat"


async def test_bad_attachments_are_refused_before_anything_is_queued(running: Harness) -> None:
    text_file = await running.member.slash("restyle", image=("notes.txt", b"hello", "text/plain"), style="anime")
    assert "PNG, JPEG or WebP" in (await text_file.wait_ack())["data"]["content"]

    fake = await running.member.slash("upscale", image=("fake.png", b"\x89PNG not really", "image/png"))
    assert "not an image" in (await fake.wait_followup(lambda m: m.ephemeral)).content

    tiny = await running.member.slash("restyle", image=("dot.png", _png(16, 16), "image/png"), style="anime")
    assert "at least 64" in (await tiny.wait_followup(lambda m: m.ephemeral)).content

    # 20000×20000 declared in a small file: a decompression bomb.
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")
    exploded = await running.member.slash("restyle", image=("bomb.png", bomb.getvalue(), "image/png"), style="anime")
    assert "pixels" in (await exploded.wait_followup(lambda m: m.ephemeral)).content

    async with running.services.db.sessions() as session:  # type: ignore[union-attr]
        assert (await session.execute(select(func.count()).select_from(Job))).scalar_one() == 0


async def test_restyle_variation_and_upscale_run_image_to_image(running: Harness) -> None:
    restyled = await running.member.slash("restyle", image=("mine.png", _png(96, 64), "image/png"), style="watercolor")
    result = await restyled.wait_followup(_is_result, timeout=60)
    [job] = await _jobs(running)
    assert (job.kind, job.width, job.height, job.style) == ("img2img", 96, 64, "watercolor")

    first = await running.member.slash("imagine", prompt="a lighthouse", seed=3)
    grid = await first.wait_followup(_is_result)
    upscale = next(cid for cid in grid.custom_ids if cid.startswith("atelier:upscale:") and cid.endswith(":1"))
    upscaled = await (await running.member.click(grid, upscale)).wait_followup(_is_result, timeout=60)
    vary = next(cid for cid in grid.custom_ids if cid.startswith("atelier:vary:") and cid.endswith(":0"))
    varied = await (await running.member.click(grid, vary)).wait_followup(_is_result, timeout=60)

    jobs = await _jobs(running)
    parent, up, var = jobs[1], jobs[2], jobs[3]
    # The grid is in score order: image 2 has the seed it was drawn with, not necessarily the job's seed + 1.
    async with running.services.db.sessions() as session:  # type: ignore[union-attr]
        second = (
            await session.execute(select(Image_.seed).where(Image_.job_id == parent.id, Image_.index == 1))
        ).scalar_one()
    assert (up.kind, up.width, up.height, up.seed, up.count) == ("upscale", 128, 128, second, 1)
    assert up.model_prompt == parent.model_prompt and up.parent_job_id == parent.id
    assert (var.kind, var.count, var.parent_job_id) == ("img2img", parent.count, parent.id)
    with Image.open(io.BytesIO(upscaled.attachments[0].data)) as image:
        assert image.size == (128, 128)
    assert result and varied
