"""The real discord.py client against the local Discord: what members see, end to end."""

from __future__ import annotations

import asyncio
import io
import json

from PIL import Image
from sqlalchemy import func, select

from bot.db.models import Job, Rating
from tests.e2e.conftest import Harness
from tests.simulator import MessageState

DEADLINE = 3.0


def _is_result(message: MessageState) -> bool:
    return bool(message.attachments) and bool(message.embeds)


async def _jobs(harness: Harness) -> int:
    async with harness.services.db.sessions() as session:  # type: ignore[union-attr]
        return int((await session.execute(select(func.count()).select_from(Job))).scalar_one())


async def test_imagine_is_acknowledged_in_time_and_delivers_a_png_with_both_prompts(running: Harness) -> None:
    interaction = await running.member.slash("imagine", prompt="a lighthouse on a cliff at dusk", seed=7)
    ack = await interaction.wait_ack()
    assert ack["type"] == 5  # deferred at once
    assert interaction.ack_seconds is not None and interaction.ack_seconds < DEADLINE

    result = await interaction.wait_followup(_is_result)
    attachment = result.attachments[0]
    with Image.open(io.BytesIO(attachment.data)) as image:
        assert image.format == "PNG"
    embed = result.embeds[0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert embed["title"] == "a lighthouse on a cliff at dusk"
    expanded = next(v for k, v in fields.items() if k.startswith("Expanded prompt"))
    assert expanded.startswith("a lighthouse on a cliff at dusk, ")
    assert fields["Seed"] == "7" and fields["Model"] == "atelier/tiny-sd"
    assert embed["image"]["url"] == f"attachment://{attachment.filename}"
    assert any(cid.startswith("atelier:reroll:") for cid in result.custom_ids)
    assert any(cid.startswith("atelier:upscale:") for cid in result.custom_ids)
    assert not result.ephemeral


async def test_invalid_options_get_a_private_message_and_create_no_job(running: Harness) -> None:
    typo = await running.member.slash("imagine", prompt="a fox", size="huge")
    ack = await typo.wait_ack()
    assert ack["type"] == 4 and ack["data"]["flags"] & 64
    assert "WIDTHxHEIGHT" in ack["data"]["content"]

    too_big = await running.member.slash("imagine", prompt="a fox", size="4096x4096")
    message = await too_big.wait_followup(lambda m: m.ephemeral)
    assert "between 64 and" in message.content
    assert too_big.original is not None and too_big.original.deleted  # no public "thinking…" left behind

    flagged = await running.member.slash("imagine", prompt="a fox --seed banana")
    assert "--seed needs a whole number" in (await flagged.wait_followup(lambda m: m.ephemeral)).content
    assert await _jobs(running) == 0


async def test_buttons_still_work_after_the_bot_restarts(harness: Harness) -> None:
    harness.start_engine()
    async with harness.sim.connect(harness.new_bot()):
        first = await harness.member.slash("imagine", prompt="a fox in the snow", seed=1)
        result = await first.wait_followup(_is_result)
    await harness.services.close()  # type: ignore[union-attr]

    async with harness.sim.connect(harness.new_bot()):
        reroll = next(cid for cid in result.custom_ids if cid.startswith("atelier:reroll:"))
        click = await harness.admin.click(result, reroll)  # someone else rerolls: their job, their quota
        assert (await click.wait_ack())["type"] == 6  # a silent defer: no public placeholder to misuse
        rerolled = await click.wait_followup(_is_result)
        assert rerolled.embeds[0]["title"] == "a fox in the snow"

        info = next(cid for cid in result.custom_ids if cid.startswith("atelier:info:"))
        shown = await (await harness.member.click(result, info)).wait_ack()
        assert shown["data"]["flags"] & 64
        assert json.loads(shown["data"]["content"].strip("`json\n"))["seed"] == 1

        async with harness.services.db.sessions() as session:  # type: ignore[union-attr]
            jobs = (await session.execute(select(Job).order_by(Job.created_at))).scalars().all()
        assert [j.user_id for j in jobs] == [harness.member.id, harness.admin.id]
        assert jobs[1].parent_job_id == jobs[0].id and jobs[1].seed != jobs[0].seed


async def test_a_result_after_the_token_expired_is_posted_to_the_channel(harness: Harness) -> None:
    async with harness.sim.connect(harness.new_bot()):
        interaction = await harness.member.slash("imagine", prompt="a slow lighthouse")
        await interaction.wait_ack()
        harness.sim.advance(16 * 60)  # the member waited longer than the token lives
        harness.start_engine()
        posted = await harness.guild.general.wait_message(lambda m: _is_result(m) and m.interaction_id is None)
        assert posted.content.startswith(f"<@{harness.member.id}>")
        assert not [m for m in interaction.followups if _is_result(m)]
        # The whole image, not the stream the refused follow-up had already read to its end.
        with Image.open(io.BytesIO(posted.attachments[0].data)) as image:
            assert image.format == "PNG" and min(image.size) >= 64


async def test_reactions_on_results_are_ratings(running: Harness) -> None:
    interaction = await running.member.slash("imagine", prompt="a red bicycle in the rain")
    result = await interaction.wait_followup(_is_result)
    # The bot records the message id just after posting; a reaction before that is not yet a rating.
    async with asyncio.timeout(10):
        while await running.bot.delivery.job_for_message(result.id) is None:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
    await running.admin.react(result, "⭐")
    await running.member.react(result, "👎")  # the requester's own rating is kept, and marked
    await running.admin.react(result, "👍")  # the latest reaction wins

    async def ratings() -> list[Rating]:
        async with running.services.db.sessions() as session:  # type: ignore[union-attr]
            return list((await session.execute(select(Rating).order_by(Rating.score))).scalars().all())

    async with asyncio.timeout(10):
        while len(rows := await ratings()) != 2 or rows[-1].score != 4:
            await asyncio.sleep(0.05)
    assert [(r.user_id, r.score, r.by_requester) for r in rows] == [
        (running.member.id, 1, True),
        (running.admin.id, 4, False),
    ]
    await running.admin.unreact(result, "👍")
    async with asyncio.timeout(10):
        while len(await ratings()) != 1:
            await asyncio.sleep(0.05)


async def test_admin_commands_refuse_members_without_manage_server(running: Harness) -> None:
    refused = await running.member.slash("atelier quota set", images_per_day=1)
    ack = await refused.wait_ack()
    assert ack["data"]["flags"] & 64 and "Manage Server" in ack["data"]["content"]

    # A grid of four images counts four.
    allowed = await running.admin.slash("atelier quota set", images_per_day=4, member=running.member)
    ack = await allowed.wait_ack()
    assert "Quota updated" in ack["data"]["content"]

    first = await running.member.slash("imagine", prompt="a fox")
    await first.wait_followup(_is_result)
    second = await running.member.slash("imagine", prompt="a fox")
    refusal = await second.wait_followup(lambda m: m.ephemeral)
    assert "Daily limit reached" in refusal.content


async def test_waiting_members_see_their_place_and_can_cancel(harness: Harness) -> None:
    bot = harness.new_bot()
    bot.progress_interval_seconds = 0.1
    async with harness.sim.connect(bot):
        first = await harness.admin.slash("imagine", prompt="a fox")
        await harness.sim.wait_for(lambda: first.original and "Queued" in first.original.content, 10)
        second = await harness.member.slash("imagine", prompt="a castle above the clouds")
        await second.wait_ack()
        status = await harness.sim.wait_for(
            lambda: second.original if second.original and "position 2" in second.original.content else None, 10
        )
        assert status.content.startswith("**a castle above the clouds**")
        cancel = next(cid for cid in status.custom_ids if cid.startswith("atelier:cancel:"))

        stranger = await harness.admin.click(status, cancel)
        assert "Only the member" in (await stranger.wait_ack())["data"]["content"]
        mine = await harness.member.click(status, cancel)
        assert (await mine.wait_ack())["data"]["content"].startswith("Cancelled")
        notice = await second.wait_followup(lambda m: "was cancelled" in m.content)
        assert "Nothing was charged" in notice.content

        harness.start_engine()
        assert _is_result(await first.wait_followup(_is_result))
