"""The simulator refuses what Discord refuses, as Discord does: one test per rule and per fault, driven
through discord.py's own client and HTTP layer, so a status or error code discord.py would not understand
fails here first."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord.http import Route

from tests.simulator import ChannelState, DiscordSimulator, GuildState
from tests.simulator.sim import CHAT_INPUT_COMMAND, DEFAULT, REPLY


class Client(discord.Client):
    """A bare client that notes the gateway events the tests wait for."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.seen: list[tuple[str, Any]] = []
        self.readies = 0
        self.interactions: list[discord.Interaction] = []

    async def on_ready(self) -> None:
        self.readies += 1

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        self.seen.append(("delete", payload.message_id))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.seen.append(("reaction", str(payload.emoji)))

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        self.interactions.append(interaction)


@pytest.fixture
async def world() -> AsyncIterator[tuple[DiscordSimulator, GuildState, Client]]:
    sim = DiscordSimulator()
    await sim.start()
    guild = sim.add_guild()
    guild.add_member("bo")
    client = Client()
    try:
        async with sim.connect(client):
            yield sim, guild, client
    finally:
        await sim.stop()


async def _post(client: Client, channel: ChannelState, **payload: Any) -> dict[str, Any]:
    """A raw create-message call: the limits are Discord's to enforce, not discord.py's helpers'."""
    route = Route("POST", "/channels/{channel_id}/messages", channel_id=channel.id)
    return await client.http.request(route, json=payload)


async def _refused(call: Any) -> discord.HTTPException:
    with pytest.raises(discord.HTTPException) as caught:
        await call
    return caught.value


def _button(custom_id: str, label: str = "go") -> dict[str, Any]:
    return {"type": 2, "style": 2, "custom_id": custom_id, "label": label}


async def test_content_is_at_most_2000_characters(world: Any) -> None:
    _, guild, client = world
    assert (await _post(client, guild.general, content="x" * 2000))["content"] == "x" * 2000
    error = await _refused(_post(client, guild.general, content="字" * 2001))
    assert (error.status, error.code) == (400, 50035)
    assert "content" in str(error)


@pytest.mark.parametrize(
    "embeds",
    [
        [{"title": "t" * 257}],
        [{"description": "d" * 4097}],
        [{"fields": [{"name": "n", "value": "v"}] * 26}],
        [{"description": "d" * 4000}, {"description": "d" * 2001}],  # 6,001 across the message's embeds
        [{"footer": {"text": "f" * 2049}}],
        [{"fields": [{"name": "n", "value": "v" * 1025}]}],
    ],
    ids=["title", "description", "fields", "total", "footer", "field-value"],
)
async def test_embed_limits(world: Any, embeds: list[dict[str, Any]]) -> None:
    _, guild, client = world
    error = await _refused(_post(client, guild.general, embeds=embeds))
    assert (error.status, error.code) == (400, 50035)


@pytest.mark.parametrize(
    "components",
    [
        [{"type": 1, "components": [_button(f"b{r}")]} for r in range(6)],
        [{"type": 1, "components": [_button(f"b{i}") for i in range(6)]}],
        [{"type": 1, "components": [_button("x" * 101)]}],
        [{"type": 1, "components": [_button("b", label="l" * 81)]}],
        [{"type": 1, "components": [_button("same"), _button("same")]}],
    ],
    ids=["rows", "buttons-in-a-row", "custom-id", "label", "duplicate-custom-id"],
)
async def test_component_limits(world: Any, components: list[dict[str, Any]]) -> None:
    _, guild, client = world
    error = await _refused(_post(client, guild.general, content="pick", components=components))
    assert (error.status, error.code) == (400, 50035)


async def test_the_most_components_discord_allows_are_accepted(world: Any) -> None:
    _, guild, client = world
    rows = [{"type": 1, "components": [_button(f"{r}-{i}", "l" * 80) for i in range(5)]} for r in range(5)]
    assert len((await _post(client, guild.general, content="pick", components=rows))["components"]) == 5


async def test_an_upload_over_the_limit_is_refused_with_40005(world: Any) -> None:
    sim, guild, client = world
    sim.attachment_size_limit = 1000
    channel = client.get_channel(guild.general.id)
    error = await _refused(channel.send(file=discord.File(io.BytesIO(b"\0" * 1001), "big.png")))
    assert (error.status, error.code) == (413, 40005)
    assert (await channel.send(file=discord.File(io.BytesIO(b"\0" * 1000), "ok.png"))).attachments[0].size == 1000


async def test_missing_channel_permissions_are_refused_and_counted(world: Any) -> None:
    sim, guild, client = world
    channel = client.get_channel(guild.general.id)
    await sim.deny(guild.general, "attach_files")
    await sim.wait_for(lambda: guild.general.bot_denied, 5)
    error = await _refused(channel.send(file=discord.File(io.BytesIO(b"png"), "a.png")))
    assert (error.status, error.code) == (403, 50013)
    assert (await channel.send("words still go")).content == "words still go"

    await sim.deny(guild.general, "embed_links")
    error = await _refused(channel.send(embed=discord.Embed(title="an embed")))
    assert (error.status, error.code) == (403, 50013)

    await sim.deny(guild.general, "send_messages")
    error = await _refused(channel.send("hello"))
    assert (error.status, error.code) == (403, 50013)

    await sim.deny(guild.general, "view_channel")
    error = await _refused(client.fetch_channel(guild.general.id))
    assert (error.status, error.code) == (403, 50001)
    assert sim.invalid_requests == 4
    # The bot's view of the channel follows CHANNEL_UPDATE, as with Discord.
    async with asyncio.timeout(5):
        while client.get_channel(guild.general.id).permissions_for(channel.guild.me).view_channel:
            await asyncio.sleep(0.01)


async def test_unknown_channels_and_messages(world: Any) -> None:
    sim, guild, client = world
    error = await _refused(_post(client, ChannelState(sim, 42, guild.id, "gone")))
    assert (error.status, error.code) == (404, 10003)
    channel = client.get_channel(guild.general.id)
    message = await channel.send("soon gone")
    await sim.delete_message(guild.general, message.id)
    error = await _refused(message.edit(content="edited"))
    assert (error.status, error.code) == (404, 10008)
    async with asyncio.timeout(5):
        while ("delete", message.id) not in client.seen:
            await asyncio.sleep(0.01)


async def _slash(sim: DiscordSimulator, guild: GuildState, client: Client) -> tuple[Any, discord.Interaction]:
    sim.commands[None] = [{"id": "1", "name": "ping", "description": "ping", "type": 1, "options": []}]
    count = len(client.interactions)
    record = await guild.members[0].slash("ping")
    async with asyncio.timeout(5):
        while len(client.interactions) == count:
            await asyncio.sleep(0.01)
    return record, client.interactions[-1]


async def test_an_interaction_must_be_answered_within_3_seconds(world: Any) -> None:
    sim, guild, client = world
    record, interaction = await _slash(sim, guild, client)
    record.dispatched_at -= 3.1  # as if the answer had taken longer than Discord waits
    error = await _refused(interaction.response.send_message("late"))
    assert (error.status, error.code) == (404, 10062)


async def test_an_interaction_token_expires_15_minutes_after_the_interaction_was_created(world: Any) -> None:
    sim, guild, client = world
    _, interaction = await _slash(sim, guild, client)
    await interaction.response.defer()
    sim.advance(14 * 60)
    await interaction.followup.send("still in time")
    sim.advance(61)
    error = await _refused(interaction.followup.send("too late"))
    assert (error.status, error.code) == (401, 50027)
    assert sim.invalid_requests == 1


async def test_the_first_follow_up_after_a_public_defer_edits_it_and_stays_public(world: Any) -> None:
    sim, guild, client = world
    record, interaction = await _slash(sim, guild, client)
    await interaction.response.defer(thinking=True)
    first = await interaction.followup.send("Daily limit reached", ephemeral=True, wait=True)
    assert first.id == record.original.id and not record.original.ephemeral  # seen by the whole channel
    second = await interaction.followup.send("a private one", ephemeral=True, wait=True)
    assert second.id != first.id and record.followups[-1].ephemeral
    assert record.original.type == CHAT_INPUT_COMMAND and record.followups[-1].type == CHAT_INPUT_COMMAND


async def test_messages_carry_discords_types(world: Any) -> None:
    sim, guild, client = world
    posted = await client.get_channel(guild.general.id).send("plain")
    assert posted.type is discord.MessageType.default and sim.messages[posted.id].type == DEFAULT
    sent = await _post(
        client, guild.general, content="with a button", components=[{"type": 1, "components": [_button("press")]}]
    )
    count = len(client.interactions)
    record = await guild.members[0].click(sim.messages[int(sent["id"])], "press")
    async with asyncio.timeout(5):
        while len(client.interactions) == count:
            await asyncio.sleep(0.01)
    await client.interactions[-1].response.send_message("you pressed it")
    assert record.original.type == REPLY


async def test_localized_names_in_any_script_are_accepted(world: Any) -> None:
    sim, _, client = world
    names = {"zh-CN": "画图", "hi": "चित्र", "th": "วาดภาพ", "ru": "рисовать", "ko": "그리기_2"}
    command = {"name": "imagine", "description": "d", "type": 1, "name_localizations": names}
    route = Route("PUT", "/applications/{application_id}/commands", application_id=sim.application_id)
    await client.http.request(route, json=[command])
    assert sim.commands[None][0]["name_localizations"] == names


@pytest.mark.parametrize(
    ("command", "where"),
    [
        ({"name": "Imagine", "description": "upper case", "type": 1}, "name"),
        ({"name": "imagine", "description": "", "type": 1}, "description"),
        ({"name": "imagine", "description": "d" * 101, "type": 1}, "description"),
        ({"name": "imagine", "description": "d", "type": 1, "description_localizations": {"zh-CN": ""}}, "zh-CN"),
        (
            {
                "name": "imagine",
                "description": "d",
                "type": 1,
                "options": [
                    {"name": "seed", "description": "d", "type": 4},
                    {"name": "prompt", "description": "d", "type": 3, "required": True},
                ],
            },
            "options",
        ),
        (
            {
                "name": "imagine",
                "description": "d",
                "type": 1,
                "options": [{"name": f"o{i}", "description": "d", "type": 3} for i in range(26)],
            },
            "options",
        ),
        (
            {
                "name": "imagine",
                "description": "d",
                "type": 1,
                "options": [{"name": "style", "description": "d", "type": 3, "choices": [{"name": "", "value": "x"}]}],
            },
            "choices",
        ),
        ({"name": "imagine", "description": "d", "type": 1, "name_localizations": {"de": "Bild"}}, "de"),
        ({"name": "imagine", "description": "d", "type": 1, "name_localizations": {"zh-CN": "画 图"}}, "zh-CN"),
        ({"name": "imagine", "description": "d", "type": 1, "name_localizations": {"zh-CN": "画" * 33}}, "zh-CN"),
        ({"name": "imagine", "description": "d", "type": 1, "name_localizations": {"zh": "画图"}}, "zh"),
        (
            {
                "name": "imagine",
                "description": "d",
                "type": 1,
                "options": [
                    {"name": "a", "description": "d", "type": 3, "name_localizations": {"zh-CN": "甲"}},
                    {"name": "b", "description": "d", "type": 3, "name_localizations": {"zh-CN": "甲"}},
                ],
            },
            "options",
        ),
        (
            {
                "name": "atelier",
                "description": "d",
                "type": 1,
                "options": [
                    {
                        "name": "config",
                        "description": "d",
                        "type": 2,
                        "options": [{"name": "channel", "description": "d", "type": 2, "options": []}],
                    }
                ],
            },
            "options",
        ),
        (
            {
                "name": "imagine",
                "description": "d",
                "type": 1,
                "options": [
                    {
                        "name": "style",
                        "description": "d",
                        "type": 3,
                        "choices": [{"name": "x", "value": "x", "name_localizations": {"zh-CN": ""}}],
                    }
                ],
            },
            "zh-CN",
        ),
    ],
    ids=[
        "name",
        "empty-description",
        "long-description",
        "localisation",
        "required-after-optional",
        "26-options",
        "choice",
        "localized-upper-case",
        "localized-space",
        "localized-33-characters",
        "unknown-locale",
        "localized-option-twice",
        "nested-groups",
        "localized-choice",
    ],
)
async def test_a_command_sync_is_validated_like_discords(world: Any, command: dict[str, Any], where: str) -> None:
    sim, _, client = world
    route = Route("PUT", "/applications/{application_id}/commands", application_id=sim.application_id)
    error = await _refused(client.http.request(route, json=[command]))
    assert (error.status, error.code) == (400, 50035) and where in str(error.text)
    assert sim.commands.get(None) is None  # nothing of a refused sync is stored


async def _raw(sim: DiscordSimulator, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bot {sim.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{sim.base_url}/api/v10{path}", headers=headers, **kwargs) as response:
            return response.status, dict(response.headers), await response.json(content_type=None)


async def test_per_route_buckets_answer_with_rate_limit_headers_then_429(world: Any) -> None:
    sim, guild, _ = world
    path = f"/channels/{guild.general.id}/messages"
    answers = [await _raw(sim, "POST", path, json={"content": f"m{i}"}) for i in range(6)]
    assert [status for status, _, _ in answers] == [200] * 5 + [429]
    _, headers, _ = answers[0]
    assert headers["X-RateLimit-Limit"] == "5" and headers["X-RateLimit-Remaining"] == "4"
    assert float(headers["X-RateLimit-Reset-After"]) > 0 and headers["X-RateLimit-Bucket"]
    _, headers, body = answers[-1]
    assert body["retry_after"] > 0 and body["global"] is False
    assert headers["Via"] and headers["X-RateLimit-Scope"] == "user"
    # Another channel has a bucket of its own.
    other = guild.add_channel("other")
    assert (await _raw(sim, "POST", f"/channels/{other.id}/messages", json={"content": "hi"}))[0] == 200
    assert sim.invalid_requests == 1


async def test_the_global_limit_is_50_requests_a_second(world: Any) -> None:
    sim, _, _ = world
    sim._global_window.clear()
    statuses = await asyncio.gather(*(_raw(sim, "GET", "/users/@me") for _ in range(55)))
    limited = [(headers, body) for status, headers, body in statuses if status == 429]
    assert len(limited) >= 5
    headers, body = limited[0]
    assert body["global"] is True and headers["X-RateLimit-Global"] == "true"


async def test_discord_py_waits_out_an_injected_429_and_the_request_then_succeeds(world: Any) -> None:
    sim, guild, client = world
    sim.inject("POST", r"^/channels/\d+/messages$", 429, retry_after=0.2)
    message = await client.get_channel(guild.general.id).send("after a wait")
    assert message.content == "after a wait"
    statuses = [c.status for c in sim.calls if c.path.endswith("/messages") and c.method == "POST"]
    assert statuses[-2:] == [429, 200] and sim.invalid_requests == 1


async def test_an_injected_error_is_answered_once_per_time(world: Any) -> None:
    sim, guild, client = world
    sim.inject("POST", r"/messages$", 500, code=0, message="boom", times=1)
    sim.inject("POST", r"/messages$", 403, code=50013, message="Missing Permissions", times=1)
    channel = client.get_channel(guild.general.id)
    # discord.py retries a 5xx itself; the 403 that follows reaches the caller.
    error = await _refused(channel.send("x"))
    assert (error.status, error.code) == (403, 50013)
    assert (await channel.send("then fine")).content == "then fine"


async def test_reconnect_resumes_and_replays_what_was_missed(world: Any) -> None:
    sim, guild, client = world
    member = guild.members[0]
    message = sim.messages[int((await _post(client, guild.general, content="react to me"))["id"])]
    await sim.close_gateway(4000)  # unknown error: resumable
    await member.react(message, "⭐")  # sent while the client is away
    async with asyncio.timeout(20):
        while ("reaction", "⭐") not in client.seen:
            await asyncio.sleep(0.02)
    assert client.readies == 1 and sim.resumes == 1  # resumed, not identified again

    await sim.reconnect()  # op 7
    await sim.wait_for(lambda: sim.resumes == 2, 20)
    await member.react(message, "❤")
    async with asyncio.timeout(20):
        while ("reaction", "❤") not in client.seen:
            await asyncio.sleep(0.02)
    assert client.readies == 1


async def test_an_invalid_session_that_cannot_be_resumed_makes_the_client_identify_again(world: Any) -> None:
    sim, _, client = world
    await sim.invalidate_session(resumable=False)
    async with asyncio.timeout(30):  # discord.py waits 1–5 s before identifying again
        while client.readies < 2:
            await asyncio.sleep(0.05)


async def test_a_fatal_close_code_ends_the_client(world: Any) -> None:
    sim, _, client = world
    await sim.close_gateway(4013)  # invalid intents: discord.py does not reconnect
    async with asyncio.timeout(10):
        while not client.is_closed():
            await asyncio.sleep(0.02)


async def test_atelier_bot_turns_a_fatal_close_into_one_line(world: Any) -> None:
    from bot.cli.serve import gateway_failure
    from bot.errors import InvalidRequest

    sim, _, client = world
    await sim.close_gateway(4004)
    async with asyncio.timeout(10):
        while not client.is_closed():
            await asyncio.sleep(0.02)
    closed = discord.ConnectionClosed(None, shard_id=None, code=4004)  # type: ignore[arg-type]
    assert (
        str(gateway_failure(closed))
        == "Discord closed the connection (4004): authentication failed: check ATELIER_DISCORD_TOKEN"
    )
    assert isinstance(gateway_failure(discord.LoginFailure("Improper token")), InvalidRequest)
