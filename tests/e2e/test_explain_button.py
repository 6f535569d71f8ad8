"""🔍 Explain in the simulator: private to whoever clicks, words first, then the heatmap grid from the
engine's re-run; nothing posted to the channel, nothing charged."""

from __future__ import annotations

import io

from PIL import Image
from sqlalchemy import select

from bot.db.models import Job, Usage
from engine.explain import TILE_SIDE
from tests.e2e.conftest import Harness
from tests.simulator import MessageState


def _is_result(message: MessageState) -> bool:
    return bool(message.attachments) and bool(message.embeds)


async def test_explain_answers_privately_with_a_heatmap_per_word(running: Harness) -> None:
    first = await running.member.slash("imagine", prompt="a lighthouse at dusk", seed=3)
    grid = await first.wait_followup(_is_result)
    explain = next(cid for cid in grid.custom_ids if cid.startswith("atelier:explain:"))
    public_before = {m.id for m in grid_channel_messages(running, grid) if not m.ephemeral}

    # Someone else asks: the answer is theirs alone.
    clicked = await running.admin.click(grid, explain)
    ack = await clicked.wait_ack()
    assert ack["type"] == 5 and ack["data"]["flags"] & 64  # deferred, ephemeral from the start
    heatmaps = await clicked.sim.wait_for(
        lambda: next((m for m in clicked.visible_messages if m.attachments), None), timeout=60
    )
    answers = clicked.visible_messages
    assert answers and all(m.ephemeral for m in answers)
    words = answers[0].embeds[0]
    fields = {f["name"]: f["value"] for f in words["fields"]}
    assert fields["Your words"] == "a lighthouse at dusk"
    assert any(name.startswith("Added by") for name in fields)
    assert "Seed" in fields["Run"] and "#1 of" in fields["Score"]
    with Image.open(io.BytesIO(heatmaps.attachments[0].data)) as picture:
        assert picture.format == "PNG" and picture.width == 4 * TILE_SIDE  # a tile for each of the 4 words

    # Nothing new in the channel for everyone to see, and the explanation cost the member nothing.
    assert {m.id for m in grid_channel_messages(running, grid) if not m.ephemeral} <= public_before
    async with running.services.db.sessions() as session:  # type: ignore[union-attr]
        explain_job = (await session.execute(select(Job).where(Job.kind == "explain"))).scalar_one()
        assert explain_job.status == "succeeded" and explain_job.explanation["reproduced"] is True
        assert await session.get(Usage, explain_job.id) is None


def grid_channel_messages(harness: Harness, message: MessageState) -> list[MessageState]:
    return [m for m in harness.sim.messages.values() if m.channel_id == message.channel_id and not m.deleted]
