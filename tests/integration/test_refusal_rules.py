"""A refused request: the member reads why in plain words, an admin also reads which rule refused it,
and the rule is stored with the refusal."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.cli.wiring import Services
from bot.db.models import ModerationEvent
from bot.errors import PolicyRefused
from bot.services.jobs import ImagineRequest


async def test_admins_read_the_rule_members_do_not(services: Services) -> None:
    await services.admin.configure(guild_id=4, actor_id=1, banned_words=["dragon"])
    with pytest.raises(PolicyRefused) as member:
        await services.jobs.submit(ImagineRequest(prompt="a red dragon", guild_id=4, user_id=2))
    assert "dragon" in str(member.value) and "rule:" not in str(member.value)
    with pytest.raises(PolicyRefused, match=r"\(rule: banned_word:dragon\)$"):
        await services.jobs.submit(ImagineRequest(prompt="a red dragon", guild_id=4, user_id=3, is_admin=True))
    with pytest.raises(PolicyRefused, match=r"\(rule: nsfw\)$"):
        await services.jobs.submit(ImagineRequest(prompt="a nude statue", guild_id=4, user_id=3, is_admin=True))
    async with services.db.sessions() as session:
        rules = (await session.execute(select(ModerationEvent.rule).order_by(ModerationEvent.id))).scalars().all()
    assert rules == ["banned_word:dragon", "banned_word:dragon", "nsfw"]
