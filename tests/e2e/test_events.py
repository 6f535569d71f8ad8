"""Results, progress and cancellations reach members as events: with the bot's backstop sweep set to an
hour, everything below must still arrive, so none of it can have come from a timer."""

from __future__ import annotations

import io

from PIL import Image

from tests.e2e.conftest import Harness
from tests.simulator.sim import MessageState

HOUR = 3600.0


def _is_result(message: MessageState) -> bool:
    return bool(message.attachments) and bool(message.embeds)


async def test_place_in_line_cancellation_and_result_arrive_without_the_sweep(harness: Harness) -> None:
    bot = harness.new_bot()
    bot.delivery_sweep_seconds = HOUR
    bot.progress_interval_seconds = 0.1
    async with harness.sim.connect(bot):  # no engine yet: the jobs wait
        first = await harness.admin.slash("imagine", prompt="a fox")
        await harness.sim.wait_for(lambda: first.original and "Queued" in first.original.content, 10)
        second = await harness.member.slash("imagine", prompt="a castle above the clouds")
        # The second job's commit is the event that puts its place in line on its status message.
        status = await harness.sim.wait_for(
            lambda: second.original if second.original and "position 2" in second.original.content else None, 10
        )
        cancel = next(cid for cid in status.custom_ids if cid.startswith("atelier:cancel:"))
        await (await harness.member.click(status, cancel)).wait_ack()
        notice = await second.wait_followup(lambda m: "was cancelled" in m.content, timeout=10)
        assert "Nothing was charged" in notice.content

        harness.start_engine()  # another connection's commits: the engine's claim, then its result
        result = await first.wait_followup(_is_result, timeout=60)
        with Image.open(io.BytesIO(result.attachments[0].data)) as image:
            image.load()
            assert min(image.size) >= 64
        assert len([m for m in first.followups if _is_result(m)]) == 1
