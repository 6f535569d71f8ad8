"""Failures that only a Discord as strict as the real one shows: each scenario makes Discord refuse
something, and checks what members see and what the bot does about it."""

from __future__ import annotations

import asyncio
import io

from PIL import Image
from sqlalchemy import select

from bot.db.models import Job
from bot.services.records import MAX_DELIVERY_ATTEMPTS
from tests.e2e.conftest import Harness
from tests.simulator import MessageState


def _is_result(message: MessageState) -> bool:
    return bool(message.attachments) and bool(message.embeds)


def _decoded_size(message: MessageState) -> tuple[int, int]:
    with Image.open(io.BytesIO(message.attachments[0].data)) as image:
        image.load()
        return image.size


async def _job_rows(harness: Harness) -> list[Job]:
    async with harness.services.db.sessions() as session:  # type: ignore[union-attr]
        return list((await session.execute(select(Job).order_by(Job.created_at))).scalars().all())


async def test_a_result_discord_keeps_refusing_backs_off_and_ends_undeliverable_without_blocking_others(
    harness: Harness,
) -> None:
    harness.start_engine()
    bot = harness.new_bot()
    bot.delivery.backoff_base_seconds = bot.delivery.backoff_cap_seconds = 0.05
    stuck_channel = harness.guild.add_channel("locked")
    async with harness.sim.connect(bot):
        stuck = await harness.member.slash("imagine", prompt="a fox in a locked room", channel=stuck_channel)
        await stuck.wait_ack()
        # Every follow-up of that interaction fails, and the channel refuses the fallback.
        harness.sim.inject("POST", rf"^/webhooks/\d+/{stuck.token}$", 403, code=50013, times=10_000)
        await harness.sim.deny(stuck_channel, "send_messages")

        fine = await harness.admin.slash("imagine", prompt="a lighthouse")
        result = await fine.wait_followup(_is_result)
        assert min(_decoded_size(result)) >= 64  # delivered while the other job keeps failing

        # Refused requests count against Discord's rate limits too: discord.py waits those out between tries.
        [stuck_job] = [j for j in await _job_rows(harness) if j.channel_id == stuck_channel.id]
        async with asyncio.timeout(90):
            while (await harness.services.jobs.get(stuck_job.id)).delivery != "undeliverable":  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
        refused = [c for c in harness.sim.calls if c.status == 403]
        assert len(refused) == 2 * MAX_DELIVERY_ATTEMPTS  # a follow-up and a channel post per attempt, then none
        assert stuck_job.id not in [job.id for job in await bot.delivery.pending()]  # and no further tries
        limited = [c for c in harness.sim.calls if c.status == 429]
        status = await harness.services.jobs.get(stuck_job.id)  # type: ignore[union-attr]
        assert status.delivery_error and "50013" in status.delivery_error
        assert harness.sim.invalid_requests == len(refused) + len(limited)


async def test_an_undeliverable_result_is_posted_once_an_admin_retries_it(harness: Harness) -> None:
    harness.start_engine()
    bot = harness.new_bot()
    bot.delivery.backoff_base_seconds = bot.delivery.backoff_cap_seconds = 0.01
    async with harness.sim.connect(bot):
        interaction = await harness.member.slash("imagine", prompt="a fox")
        await interaction.wait_ack()
        harness.sim.inject("POST", r"^/webhooks/", 403, code=50013, times=MAX_DELIVERY_ATTEMPTS)
        harness.sim.inject("POST", r"^/channels/\d+/messages$", 403, code=50013, times=MAX_DELIVERY_ATTEMPTS)
        async with asyncio.timeout(30):
            while not (jobs := await _job_rows(harness)):
                await asyncio.sleep(0.02)
        [job] = jobs
        async with asyncio.timeout(90):
            while (await harness.services.jobs.get(job.id)).delivery != "undeliverable":  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
        assert (await harness.services.jobs.retry(job.id)).delivery == "pending"  # type: ignore[union-attr]
        posted = await harness.guild.general.wait_message(_is_result)  # in the channel: the member is named
        assert min(_decoded_size(posted)) >= 64 and posted.content.startswith(f"<@{harness.member.id}>")
        async with asyncio.timeout(10):  # the message id is recorded just after the post
            while (await harness.services.jobs.get(job.id)).delivery != "delivered":  # type: ignore[union-attr]
                await asyncio.sleep(0.02)


async def test_a_refused_button_click_is_seen_by_the_clicker_only(running: Harness) -> None:
    first = await running.member.slash("imagine", prompt="a fox in the snow")
    result = await first.wait_followup(_is_result)
    await running.services.admin.set_quota(  # type: ignore[union-attr]
        guild_id=running.guild.id, actor_id=0, user_id=running.admin.id, images_per_day=0
    )
    reroll = next(cid for cid in result.custom_ids if cid.startswith("atelier:reroll:"))
    click = await running.admin.click(result, reroll)
    refusal = await click.wait_followup(lambda m: "limit" in m.content.lower())
    assert refusal.ephemeral
    public = [m for m in running.guild.general.messages if not m.ephemeral]
    assert not [m for m in public if "limit" in m.content.lower()]
    assert result.attachments and _is_result(result)  # the clicked result is untouched


async def test_info_on_a_long_chinese_prompt_stays_within_discords_limits(running: Harness) -> None:
    prompt = "一只在雪地里奔跑的红狐狸，" * 70  # 910 characters of CJK
    interaction = await running.member.slash("imagine", prompt=prompt, raw=True)
    result = await interaction.wait_followup(_is_result)
    info = next(cid for cid in result.custom_ids if cid.startswith("atelier:info:"))
    shown = await (await running.member.click(result, info)).wait_ack()
    assert shown["type"] == 4 and shown["data"]["flags"] & 64  # accepted by the simulator's limits


async def test_a_rate_limited_follow_up_is_retried_and_delivered_once(running: Harness) -> None:
    interaction = await running.member.slash("imagine", prompt="a red bicycle")
    await interaction.wait_ack()
    running.sim.inject("POST", rf"^/webhooks/\d+/{interaction.token}$", 429, retry_after=0.3)
    result = await interaction.wait_followup(_is_result)
    assert min(_decoded_size(result)) >= 64
    assert len([m for m in interaction.followups if _is_result(m)]) == 1
    assert running.sim.invalid_requests == 1


async def test_a_queued_job_is_not_edited_while_nothing_a_member_sees_changes(harness: Harness) -> None:
    bot = harness.new_bot()
    bot.progress_interval_seconds = 3600  # the passes below are the only ones
    async with harness.sim.connect(bot):  # no engine: the job waits in the queue
        interaction = await harness.member.slash("imagine", prompt="a patient fox")
        await interaction.wait_ack()
        await harness.sim.wait_for(lambda: interaction.original and "Queued" in interaction.original.content, 10)
        before = len(harness.sim.calls_to(f"/webhooks/{harness.sim.application_id}/{interaction.token}", "PATCH"))
        for _ in range(20):  # twenty seconds of the bot's progress loop
            await bot._progress_pass()
        after = len(harness.sim.calls_to(f"/webhooks/{harness.sim.application_id}/{interaction.token}", "PATCH"))
        assert after - before <= 1


async def test_ratings_given_while_the_gateway_was_down_arrive_on_resume(running: Harness) -> None:
    from bot.db.models import Rating

    interaction = await running.member.slash("imagine", prompt="a lighthouse at night")
    result = await interaction.wait_followup(_is_result)
    async with asyncio.timeout(10):
        while await running.bot.delivery.job_for_message(result.id) is None:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
    await running.sim.close_gateway(4000)  # "unknown error": discord.py reconnects and resumes
    await running.admin.react(result, "⭐")  # Discord keeps it for the session and replays it
    await running.sim.reconnect()  # and an op 7 on the resumed connection changes nothing either

    async def stars() -> list[int]:
        async with running.services.db.sessions() as session:  # type: ignore[union-attr]
            return list((await session.execute(select(Rating.score))).scalars().all())

    async with asyncio.timeout(30):
        while await stars() != [5]:
            await asyncio.sleep(0.05)
    # The bot still answers commands after both.
    again = await running.member.slash("imagine", prompt="a second lighthouse")
    assert min(_decoded_size(await again.wait_followup(_is_result))) >= 64
