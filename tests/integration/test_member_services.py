"""The rules behind the member-facing commands, without Discord: which jobs /info may show, the ranges
/imagine suggests, and the channel list /atelier config channel edits."""

from __future__ import annotations

import pytest

from bot.cli.wiring import Services
from bot.config import Settings
from bot.errors import NotFound
from bot.services.jobs import limits_for
from tests.factories import add_job


async def test_info_shows_a_servers_jobs_in_that_server_and_a_members_own_in_direct_messages(
    services: Services,
) -> None:
    job_id = await add_job(services.db, guild_id=10, user_id=1)
    assert (await services.jobs.visible_to(job_id, guild_id=10, user_id=2)).id == job_id
    assert (await services.jobs.visible_to(job_id, guild_id=None, user_id=1)).id == job_id
    for guild_id, user_id in ((11, 1), (None, 2)):
        with pytest.raises(NotFound) as refused:
            await services.jobs.visible_to(job_id, guild_id=guild_id, user_id=user_id)
        assert str(refused.value) == f"No job {job_id}."  # the same words as for an id that never existed


def test_the_ranges_come_from_the_model_the_host_and_the_server(settings: Settings) -> None:
    from bot.db.models import Guild

    turbo = limits_for(settings, None, "stabilityai/sdxl-turbo")
    assert (turbo.max_steps, turbo.default_steps, turbo.side) == (8, 1, 512)
    strict = limits_for(settings, Guild(id=1, max_steps=4, max_side=512), "stabilityai/sdxl-turbo")
    assert strict.max_steps == 4 and all(max(size) <= 512 for size in strict.sizes())
    assert (512, 512) in strict.sizes()
    generic = limits_for(settings, None, "some/other-model")
    assert generic.max_steps == min(80, settings.max_steps)


async def test_channels_are_added_and_removed_and_audited(services: Services) -> None:
    changed, channels = await services.admin.set_channel(guild_id=5, actor_id=9, channel_id=100, allowed=True)
    assert changed and channels == [100]
    assert (await services.admin.show_config(5))["allowed_channels"] == [100]
    changed, channels = await services.admin.set_channel(guild_id=5, actor_id=9, channel_id=100, allowed=False)
    assert changed and channels == []
    changed, _ = await services.admin.set_channel(guild_id=5, actor_id=9, channel_id=100, allowed=False)
    assert not changed
    actions = [entry.action for entry in await services.admin.audit_log(5)]
    assert actions == ["channel.remove", "channel.add"]
    shown = await services.admin.show_config(6)  # a server never configured: the defaults
    assert shown["nsfw_policy"] == "block" and shown["allowed_channels"] == [] and shown["max_steps"] is None
