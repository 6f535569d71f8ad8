"""What members meet without reading the README, through the real client: /help, suggestions and
ranges, 🗑️, quota reset times, /sync for the owner only, /info within its server, the welcome."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from bot.db.models import Job, Usage
from tests.e2e.conftest import Harness
from tests.simulator import MessageState
from tests.simulator.sim import MANAGE_MESSAGES


def _is_result(message: MessageState) -> bool:
    return bool(message.attachments) and bool(message.embeds)


async def _count(harness: Harness, model: type) -> int:
    async with harness.services.db.sessions() as session:  # type: ignore[union-attr]
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_help_is_private_and_explains_each_command(running: Harness) -> None:
    overview = await (await running.member.slash("help")).wait_ack()
    assert overview["data"]["flags"] & 64
    text = overview["data"]["embeds"][0]["description"]
    assert "/imagine" in text and "🗑️" in text and "/usage" in text
    one = await (await running.member.slash("help", command="imagine")).wait_ack()
    described = one["data"]["embeds"][0]["description"]
    assert described.startswith("**/imagine prompt**") and "1–50" in described  # the tiny model's range
    assert running.bot.help_command is None  # no text-command "help" besides the slash command


async def test_options_suggest_the_servers_presets_and_limits(running: Harness) -> None:
    styles = await running.member.autocomplete("imagine", "style", "wat", prompt="a fox")
    assert [c["value"] for c in styles] == ["watercolor"]
    await (await running.admin.slash("atelier config set", max_steps=3, style="anime")).wait_ack()
    steps = await running.member.autocomplete("imagine", "steps", "", prompt="a fox")
    assert [c["value"] for c in steps] == [1, 2, 3]
    first = (await running.member.autocomplete("imagine", "style", "", prompt="a fox"))[0]
    assert first["value"] == "anime"  # the server's default first
    sizes = await running.member.autocomplete("imagine", "size", "", prompt="a fox")
    assert "64x64" in [c["value"] for c in sizes]

    # Past the server's limit (within the model's): one private line, no job, no quota spent.
    over = await running.member.slash("imagine", prompt="a fox", steps=5)
    refusal = await over.wait_followup(lambda m: m.ephemeral)
    assert refusal.content == "Steps must be between 1 and 3 (got 5)."
    assert await _count(running, Job) == 0 and await _count(running, Usage) == 0


async def test_steps_range_sent_to_discord_is_the_models(running: Harness) -> None:
    [imagine] = [c for c in running.sim.commands[None] if c["name"] == "imagine"]
    steps = next(o for o in imagine["options"] if o["name"] == "steps")
    assert (steps["min_value"], steps["max_value"]) == (1, 50) and steps["autocomplete"]

    def undescribed(nodes: list[dict], path: str = "") -> list[str]:
        found = []
        for node in nodes:
            where = f"{path} {node['name']}".strip()
            if node.get("description") in (None, "", "…"):  # "…": discord.py's stand-in for none
                found.append(where)
            found += undescribed(node.get("options") or [], where)
        return found

    # Message menus (type 3) have no description in Discord.
    assert undescribed([c for c in running.sim.commands[None] if c.get("type", 1) == 1]) == []


async def test_a_result_is_deleted_by_its_requester_or_a_moderator_only(running: Harness) -> None:
    moderators = running.guild.add_role("Moderators", permissions=MANAGE_MESSAGES)
    moderator = running.guild.add_member("mo", roles=[moderators])
    results = []
    for prompt in ("a fox", "an owl"):
        asked = await running.member.slash("imagine", prompt=prompt)
        results.append(await asked.wait_followup(_is_result))
    delete = [next(c for c in r.custom_ids if c.startswith("atelier:delete:")) for r in results]

    stranger = await running.admin.click(results[0], delete[0])
    ack = await stranger.wait_ack()
    assert ack["data"]["flags"] & 64 and "Only the member who asked" in ack["data"]["content"]
    assert not results[0].deleted

    await (await running.member.click(results[0], delete[0])).wait_ack()
    await running.sim.wait_for(lambda: results[0].deleted, 10)
    await (await moderator.click(results[1], delete[1])).wait_ack()
    await running.sim.wait_for(lambda: results[1].deleted, 10)


async def test_a_quota_refusal_says_when_the_quota_resets(running: Harness) -> None:
    await (await running.admin.slash("atelier quota set", images_per_day=1, member=running.member)).wait_ack()
    refused = await running.member.slash("imagine", prompt="a fox")  # a grid of four needs four
    line = (await refused.wait_followup(lambda m: m.ephemeral)).content
    assert re.search(r"Your quota resets <t:\d+:R>\.$", line), line


async def test_sync_is_for_the_bots_owner_only(running: Harness) -> None:
    refused = await (await running.admin.slash("sync")).wait_ack()
    assert refused["data"]["flags"] & 64 and "owner" in refused["data"]["content"]
    [sync] = [c for c in running.sim.commands[None] if c["name"] == "sync"]
    assert int(sync["default_member_permissions"]) == 1 << 3  # shown to administrators only

    owner = running.guild.add_member("owner")
    owner.id = running.sim.owner_id  # the application's owner, as Discord reports it
    synced = await owner.slash("sync")
    done = await synced.wait_followup(lambda m: m.ephemeral)
    assert re.fullmatch(r"Synced \d+ command\(s\)\.", done.content)


async def test_owner_ids_replace_the_application_owner(harness: Harness) -> None:
    harness.settings.owner_ids = [harness.member.id]
    async with harness.sim.connect(harness.new_bot()):
        done = await (await harness.member.slash("sync")).wait_followup(lambda m: m.ephemeral)
        assert done.content.startswith("Synced")


async def test_info_shows_only_jobs_of_the_same_server(harness: Harness) -> None:
    other = harness.sim.add_guild("Elsewhere")
    outsider = other.add_member("eve")
    harness.start_engine()
    async with harness.sim.connect(harness.new_bot()):
        result = await (await harness.member.slash("imagine", prompt="a fox", seed=3)).wait_followup(_is_result)
        job_id = result.embeds[0]["footer"]["text"].removeprefix("job ")
        here = await (await harness.admin.slash("info", job_id=job_id)).wait_ack()
        assert '"seed": 3' in here["data"]["content"]
        there = await (await outsider.slash("info", job_id=job_id)).wait_ack()
        assert there["data"]["content"] == f"No job {job_id}." and there["data"]["flags"] & 64


async def test_admins_see_the_settings_and_remove_a_channel(running: Harness) -> None:
    art = running.guild.channels[1]  # known to the client since it connected
    added = await (
        await running.admin.slash("atelier config channel", action="add", options={"channel": art})
    ).wait_ack()
    assert f"<#{art.id}>" in added["data"]["content"]
    outside = await running.member.slash("imagine", prompt="a fox")
    assert "not enabled in this channel" in (await outside.wait_followup(lambda m: m.ephemeral)).content

    shown = await (await running.admin.slash("atelier config show")).wait_ack()
    fields = {f["name"]: f["value"] for f in shown["data"]["embeds"][0]["fields"]}
    assert fields["allowed_channels"] == f"<#{art.id}>" and fields["nsfw_policy"] == "block"
    assert shown["data"]["flags"] & 64

    removed = await (
        await running.admin.slash("atelier config channel", action="remove", options={"channel": art})
    ).wait_ack()
    assert "no longer" in removed["data"]["content"] and "every channel" in removed["data"]["content"]
    again = await running.member.slash("imagine", prompt="a fox")
    assert _is_result(await again.wait_followup(_is_result))

    refused = await (await running.member.slash("atelier config show")).wait_ack()
    assert "Manage Server" in refused["data"]["content"]


async def test_the_bot_greets_a_server_it_joins(running: Harness) -> None:
    joined = running.sim.add_guild("New place", installed=False)
    joined.add_member("founder")  # the server's owner (a server without members would make the bot its owner)
    rules = joined.add_channel("rules", position=0)
    await running.sim.deny(rules, "send_messages")  # the first channel is read-only for the bot
    joined.general.position = 1
    await running.sim.join(joined)
    welcome = await joined.general.wait_message(lambda m: "/imagine" in m.content)
    assert "/help" in welcome.content

    with_system = running.sim.add_guild("Has a system channel", installed=False, locale="zh-CN")
    with_system.add_member("founder")
    with_system.system_channel = with_system.add_channel("welcome")
    await running.sim.join(with_system)
    greeting = await with_system.system_channel.wait_message(lambda m: "/imagine" in m.content)
    assert "你好" in greeting.content  # the server's language
    assert not with_system.general.messages
