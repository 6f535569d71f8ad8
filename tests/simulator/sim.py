"""State, gateway and REST of the local Discord simulator, plus the driver API tests use.

It speaks just enough of Discord's protocol (API v10, JSON text frames) for discord.py's own client,
and keeps what happened: messages with their attachments, embeds and components, reactions, and every
REST call with its time, so tests can assert on deadlines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from tests.simulator import rules
from tests.simulator.rules import Refusal

log = logging.getLogger(__name__)

MANAGE_GUILD = 1 << 5
MANAGE_MESSAGES = 1 << 13
ADMINISTRATOR = 1 << 3
EVERYONE_PERMISSIONS = (
    (1 << 10) | (1 << 11) | (1 << 15) | (1 << 16) | (1 << 6) | (1 << 31)
)  # view, send, attach, history, react, use commands
# What the bot's invite asks for, granted through its managed role.
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | (1 << 14)  # + embed links
TOKEN_LIFETIME = 15 * 60
EPHEMERAL = 1 << 6
OPTION_TYPES = {"str": 3, "int": 4, "bool": 5, "float": 10}

DISCORD_EPOCH_MS = 1_420_070_400_000
_last_id = 0

# Message types (discord-api-docs, Message Resource): what a channel post, an interaction's reply to a
# component and an application command's response are.
DEFAULT, REPLY, CHAT_INPUT_COMMAND = 0, 19, 20
GLOBAL_LIMIT_PER_SECOND = 50
_COUNTED: web.RequestKey[Any] = web.RequestKey("sim_bucket", Any)


def snowflake() -> int:
    """An id that carries its creation time, as Discord's do: discord.py reads ``created_at`` from it."""
    global _last_id
    _last_id = max(_last_id + 1, (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22)
    return _last_id


def _iso(moment: float | None = None) -> str:
    return datetime.fromtimestamp(moment or time.time(), UTC).isoformat()


@dataclass
class _Fault:
    method: str
    route: re.Pattern[str]
    status: int
    code: int | None
    message: str | None
    retry_after: float | None
    times: int
    every: int = 1
    seen: int = 0


@dataclass
class _Bucket:
    limit: int
    per: float
    window_start: float = 0.0
    used: int = 0


def _bucket(method: str, path: str) -> tuple[str, str] | None:
    """The route name a request's rate limit is counted under, and the major parameter it is per
    (Discord: per channel for channel routes, per token for interaction webhooks)."""
    parts = path.removeprefix("/api/v10/").strip("/").split("/")
    match parts:
        case ["channels", channel, "messages"]:
            return f"{method} /channels/{{channel}}/messages", channel
        case ["channels", channel, "messages", _]:
            return f"{method} /channels/{{channel}}/messages/{{message}}", channel
        case ["webhooks", _, token, *_]:
            return "webhooks/{token}", token
    return None


@dataclass
class Call:
    at: float
    method: str
    path: str
    status: int
    body: Any


@dataclass
class Attachment:
    id: int
    filename: str
    data: bytes
    content_type: str


@dataclass
class MessageState:
    id: int
    channel_id: int
    guild_id: int | None
    author: dict[str, Any]
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    interaction_id: int | None = None
    deleted: bool = False
    reactions: dict[str, set[int]] = field(default_factory=dict)
    webhook_id: int | None = None
    type: int = DEFAULT

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for row in self.components for c in row.get("components", []) if "custom_id" in c]

    def to_dict(self, base_url: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author,
            "content": self.content,
            "timestamp": _iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [
                {
                    "id": str(a.id),
                    "filename": a.filename,
                    "size": len(a.data),
                    "url": f"{base_url}/attachments/{a.id}/{a.filename}",
                    "proxy_url": f"{base_url}/attachments/{a.id}/{a.filename}",
                    "content_type": a.content_type,
                }
                for a in self.attachments
            ],
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
        }
        if self.guild_id:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id:
            data["webhook_id"] = str(self.webhook_id)
        return data


@dataclass
class ChannelState:
    sim: DiscordSimulator
    id: int
    guild_id: int
    name: str
    nsfw: bool = False
    bot_denied: int = 0  # permissions taken from the bot in this channel (sim.deny)
    position: int = 0

    @property
    def bot_permissions(self) -> int:
        return BOT_PERMISSIONS & ~self.bot_denied

    def to_dict(self) -> dict[str, Any]:
        overwrites = []
        if self.bot_denied:
            overwrites.append({"id": str(self.sim.bot_id), "type": 1, "allow": "0", "deny": str(self.bot_denied)})
        return {
            "id": str(self.id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "nsfw": self.nsfw,
            "permission_overwrites": overwrites,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
        }

    @property
    def messages(self) -> list[MessageState]:
        return [m for m in self.sim.messages.values() if m.channel_id == self.id and not m.deleted]

    async def wait_message(
        self, predicate: Callable[[MessageState], bool] = lambda m: True, timeout: float = 30
    ) -> MessageState:
        return await self.sim.wait_for(lambda: next((m for m in self.messages if predicate(m)), None), timeout)


@dataclass
class RoleState:
    id: int
    name: str
    permissions: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class MemberState:
    sim: DiscordSimulator
    guild: GuildState
    id: int
    name: str
    roles: list[RoleState] = field(default_factory=list)
    bot: bool = False

    @property
    def permissions(self) -> int:
        value = self.guild.everyone.permissions
        for role in self.roles:
            value |= role.permissions
        return value

    def user_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.name,
            "avatar": None,
            "bot": self.bot,
        }

    def member_dict(self) -> dict[str, Any]:
        return {
            "user": self.user_dict(),
            "roles": [str(r.id) for r in self.roles],
            "joined_at": _iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
        }

    # ---------------------------------------------------------------- driving

    async def slash(
        self,
        command: str,
        /,
        *,
        channel: ChannelState | None = None,
        locale: str = "en-US",
        options: dict[str, Any] | None = None,
        **named: Any,
    ) -> InteractionRecord:
        """Run a slash command (``"imagine"`` or ``"atelier quota set"``) in ``channel`` as this member,
        whose Discord client is set to ``locale`` (``"zh-CN"``…). Options by their default (English)
        names, as Discord sends them whatever the member's language; ``options`` for one named like a
        keyword of this method (an option called ``channel``)."""
        given = {**named, **(options or {})}
        return await self.sim.dispatch_command(self, command, channel or self.guild.general, given, locale=locale)

    async def autocomplete(
        self, command: str, focused: str, current: str, /, *, locale: str = "en-US", **options: Any
    ) -> list[dict[str, Any]]:
        """Type ``current`` into option ``focused`` and return the choices the bot suggests."""
        record = await self.sim.dispatch_command(
            self, command, self.guild.general, {**options, focused: current}, locale=locale, focused=focused
        )
        answer = await record.wait_ack()
        if answer.get("type") != 8:
            raise AssertionError(f"autocomplete answered with response type {answer.get('type')}")
        return answer["data"]["choices"]

    async def click(self, message: MessageState, custom_id: str, *, locale: str = "en-US") -> InteractionRecord:
        if custom_id not in message.custom_ids:
            raise AssertionError(f"{custom_id} is not a component of message {message.id}: {message.custom_ids}")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self.sim.dispatch_interaction(
            self, 3, data, self.sim.channels[message.channel_id], message=message, locale=locale
        )

    async def message_command(self, name: str, message: MessageState) -> InteractionRecord:
        """Run a message context-menu command ("Apps → Edit with Atelier") on ``message`` as this member."""
        return await self.sim.dispatch_message_command(self, name, message)

    async def post(
        self,
        channel: ChannelState,
        content: str = "",
        *,
        files: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
    ) -> MessageState:
        """A message this member sends, with attachments given as (filename, data, content type)."""
        attachments = [Attachment(snowflake(), name, data, kind) for name, data, kind in files]
        message = MessageState(
            snowflake(), channel.id, channel.guild_id, self.user_dict(), content, attachments=attachments
        )
        for attachment in attachments:
            self.sim.attachments[attachment.id] = attachment
        self.sim.messages[message.id] = message
        await self.sim.dispatch("MESSAGE_CREATE", message.to_dict(self.sim.base_url) | {"member": self.member_dict()})
        return message

    async def submit_modal(self, after: InteractionRecord, values: dict[str, str]) -> InteractionRecord:
        modal = after.modal
        if modal is None:
            raise AssertionError("that interaction did not open a modal")
        rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()]
        data = {"custom_id": modal["custom_id"], "components": rows}
        # Submitted from the client that opened the form, so in its language.
        return await self.sim.dispatch_interaction(
            self, 5, data, after.channel, message=after.message, locale=after.locale
        )

    async def react(self, message: MessageState, emoji: str) -> None:
        message.reactions.setdefault(emoji, set()).add(self.id)
        await self.sim.dispatch(
            "MESSAGE_REACTION_ADD",
            self._reaction(message, emoji)
            | {"member": self.member_dict(), "message_author_id": message.author["id"], "burst": False, "type": 0},
        )

    async def unreact(self, message: MessageState, emoji: str) -> None:
        message.reactions.get(emoji, set()).discard(self.id)
        await self.sim.dispatch("MESSAGE_REACTION_REMOVE", self._reaction(message, emoji) | {"burst": False, "type": 0})

    def _reaction(self, message: MessageState, emoji: str) -> dict[str, Any]:
        return {
            "user_id": str(self.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "guild_id": str(self.guild.id),
            "emoji": {"id": None, "name": emoji},
        }


@dataclass
class GuildState:
    sim: DiscordSimulator
    id: int
    name: str
    everyone: RoleState
    roles: list[RoleState] = field(default_factory=list)
    channels: list[ChannelState] = field(default_factory=list)
    members: list[MemberState] = field(default_factory=list)
    bot_role: RoleState | None = None  # the managed role Discord gives an app on install
    preferred_locale: str = "en-US"
    system_channel: ChannelState | None = None  # where Discord posts join messages; None: none set

    @property
    def general(self) -> ChannelState:
        return self.channels[0]

    def add_channel(self, name: str, *, nsfw: bool = False, position: int | None = None) -> ChannelState:
        channel = ChannelState(self.sim, snowflake(), self.id, name, nsfw)
        channel.position = len(self.channels) if position is None else position
        self.channels.append(channel)
        self.sim.channels[channel.id] = channel
        return channel

    def add_role(self, name: str, *, permissions: int = 0) -> RoleState:
        role = RoleState(snowflake(), name, permissions)
        self.roles.append(role)
        return role

    def add_member(self, name: str, *, roles: list[RoleState] | None = None, bot: bool = False) -> MemberState:
        member = MemberState(self.sim, self, snowflake(), name, list(roles or []), bot)
        self.members.append(member)
        return member

    def to_dict(self) -> dict[str, Any]:
        bot_roles = [self.bot_role] if self.bot_role else []
        bot_member = MemberState(self.sim, self, self.sim.bot_id, "Atelier", bot_roles, True)
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "owner_id": str(self.members[0].id if self.members else self.sim.bot_id),
            "roles": [r.to_dict() for r in [self.everyone, *bot_roles, *self.roles]],
            "channels": [c.to_dict() for c in self.channels],
            "members": [m.member_dict() for m in [bot_member, *self.members]],
            "member_count": len(self.members) + 1,
            "emojis": [],
            "stickers": [],
            "features": [],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "large": False,
            "unavailable": False,
            "premium_tier": 0,
            "preferred_locale": self.preferred_locale,
            "system_channel_id": str(self.system_channel.id) if self.system_channel else None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_flags": 0,
            "joined_at": _iso(),
        }


@dataclass
class InteractionRecord:
    sim: DiscordSimulator
    id: int
    token: str
    type: int
    member: MemberState
    channel: ChannelState
    dispatched_at: float
    created_sim_time: float
    message: MessageState | None = None
    callback: dict[str, Any] | None = None
    callback_at: float | None = None
    original: MessageState | None = None
    followups: list[MessageState] = field(default_factory=list)
    # When each of ``followups`` was posted (time.monotonic()), for latency benchmarks.
    followup_times: list[float] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    # The member's Discord client language, which every interaction from that client carries.
    locale: str = "en-US"

    @property
    def ack_seconds(self) -> float | None:
        return None if self.callback_at is None else self.callback_at - self.dispatched_at

    async def wait_ack(self, timeout: float = 10) -> dict[str, Any]:
        return await self.sim.wait_for(lambda: self.callback, timeout)

    async def wait_followup(
        self, predicate: Callable[[MessageState], bool] = lambda m: True, timeout: float = 30
    ) -> MessageState:
        return await self.sim.wait_for(
            lambda: next((m for m in self.followups if predicate(m) and not m.deleted), None), timeout
        )

    @property
    def visible_messages(self) -> list[MessageState]:
        messages = ([self.original] if self.original else []) + self.followups
        return [m for m in messages if not m.deleted]


class DiscordSimulator:
    def __init__(self) -> None:
        self.bot_id = snowflake()
        self.application_id = self.bot_id
        self.token = "simulated.bot.token"
        self.owner_id = snowflake()  # the application's owner, as GET /oauth2/applications/@me says
        self.guilds: list[GuildState] = []
        self.channels: dict[int, ChannelState] = {}
        self.messages: dict[int, MessageState] = {}
        self.attachments: dict[int, Attachment] = {}
        self.interactions: dict[str, InteractionRecord] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.calls: list[Call] = []
        self.clock_offset = 0.0
        self.attachment_size_limit = 10 * 1024 * 1024
        # Per-route buckets as (requests, per seconds); the keys are _bucket()'s route names.
        self.route_limits: dict[str, tuple[int, float]] = {
            "POST /channels/{channel}/messages": (5, 5.0),
            "PATCH /channels/{channel}/messages/{message}": (5, 5.0),
            "DELETE /channels/{channel}/messages/{message}": (5, 1.0),
            "webhooks/{token}": (5, 2.0),
        }
        self.invalid_requests = 0  # 401, 403 and 429 answers: Discord bans an IP past 10,000 in 10 minutes
        self.injected = 0  # of those and others, how many a test injected
        self.resumes = 0  # sessions resumed (RESUME answered with RESUMED)
        self._faults: list[_Fault] = []
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._global_window: list[float] = []
        self._sockets: list[web.WebSocketResponse] = []
        # Each connection's and each session's shard [id, count], as IDENTIFY gave it ([0, 1] unsharded).
        self._shard_of_socket: dict[web.WebSocketResponse, tuple[int, int]] = {}
        self._shard_of_session: dict[str, tuple[int, int]] = {}
        self._sequence = 0
        self._sessions: set[str] = set()
        self._events: list[dict[str, Any]] = []  # every dispatch, for replay on RESUME
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._record, self._limit_headers_on])
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{id}/{filename}", self._get_attachment)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def now(self) -> float:
        """Simulated wall time: advance() moves it, so tests can expire interaction tokens."""
        return time.monotonic() + self.clock_offset

    def advance(self, seconds: float) -> None:
        self.clock_offset += seconds

    # ---------------------------------------------------------------- faults

    def inject(
        self,
        method: str,
        route_regex: str,
        status: int,
        *,
        code: int | None = None,
        message: str | None = None,
        retry_after: float | None = None,
        times: int = 1,
        every: int = 1,
    ) -> None:
        """The next ``times`` requests whose method and path (after /api/v10) match get this error (with
        ``every=20``: one matching request in twenty); a 429 with ``retry_after`` carries Discord's
        rate-limit headers and body."""
        fault = _Fault(method.upper(), re.compile(route_regex), status, code, message, retry_after, times, every)
        self._faults.append(fault)

    def clear_faults(self) -> None:
        """Drop every injected fault still pending."""
        self._faults.clear()

    async def delete_message(self, channel: ChannelState, message_id: int) -> None:
        """As if a moderator deleted it: gone for every route, and the bot gets MESSAGE_DELETE."""
        message = self.messages[message_id]
        message.deleted = True
        await self.dispatch(
            "MESSAGE_DELETE", {"id": str(message_id), "channel_id": str(channel.id), "guild_id": str(channel.guild_id)}
        )

    async def deny(self, channel: ChannelState, *permissions: str) -> None:
        """Take permissions (``"send_messages"``, ``"attach_files"``, ``"embed_links"``, ``"view_channel"``,
        ...) from the bot in one channel, with the CHANNEL_UPDATE Discord sends."""
        for name in permissions:
            channel.bot_denied |= rules.PERMISSIONS[name]
        if self._sockets:
            await self.dispatch("CHANNEL_UPDATE", channel.to_dict())

    async def reconnect(self) -> None:
        """Gateway op 7: the client must reconnect and RESUME; events in between are replayed."""
        for ws in list(self._sockets):
            await ws.send_str(json.dumps({"op": 7, "d": None, "s": None, "t": None}))

    async def invalidate_session(self, resumable: bool) -> None:
        """Gateway op 9, unprompted: resumable, the client resumes; not, it identifies anew."""
        if not resumable:
            self._sessions.clear()
        for ws in list(self._sockets):
            await ws.send_str(json.dumps({"op": 9, "d": resumable, "s": None, "t": None}))

    async def close_gateway(self, code: int) -> None:
        """Close every gateway connection with ``code`` (4000–4014: Discord's own close codes)."""
        if code in (4007, 4009):  # invalid sequence, session timed out: the session cannot be resumed
            self._sessions.clear()
        for ws in list(self._sockets):
            self._sockets.remove(ws)
            await ws.close(code=code, message=b"closed by the simulator")

    @contextmanager
    def pointed_at(self) -> Iterator[None]:
        """Every discord.py client started inside the block (in any thread) talks to this simulator."""
        import discord
        import yarl

        saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = f"{self.base_url}/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{self.port}/")
        try:
            yield
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved

    @asynccontextmanager
    async def connect(self, client: Any, *, ready_timeout: float = 20) -> AsyncIterator[Any]:
        """Run a discord.py client against this simulator until the block ends."""
        with self.pointed_at():
            async with self._connected(client, ready_timeout):
                yield client

    @asynccontextmanager
    async def _connected(self, client: Any, ready_timeout: float) -> AsyncIterator[Any]:
        task = asyncio.create_task(client.start(self.token))
        try:
            ready = asyncio.create_task(client.wait_until_ready())
            done, _ = await asyncio.wait({ready, task}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises what stopped the client
            if ready not in done:
                ready.cancel()
                raise TimeoutError("the client never became ready")
            yield client
        finally:
            await client.close()
            try:
                await asyncio.wait_for(task, 10)
            except (Exception, asyncio.CancelledError):
                log.debug("client task ended", exc_info=True)

    # ---------------------------------------------------------------- state helpers

    def add_guild(
        self,
        name: str = "Atelier Test",
        *,
        installed: bool = True,
        locale: str = "en-US",
        shard: tuple[int, int] | None = None,
    ) -> GuildState:
        """A server; ``installed=False``: one the bot is not in yet (see ``join``); with ``shard`` ([id,
        count]), one whose id puts it on that shard."""
        guild_id = snowflake()
        while shard is not None and self.shard_of(guild_id, shard[1]) != shard[0]:
            guild_id = snowflake()
        guild = GuildState(self, guild_id, name, RoleState(guild_id, "@everyone", EVERYONE_PERMISSIONS))
        guild.bot_role = RoleState(snowflake(), "Atelier", BOT_PERMISSIONS)
        guild.preferred_locale = locale
        guild.add_channel("general")
        if installed:
            self.guilds.append(guild)
        return guild

    async def join(self, guild: GuildState) -> None:
        """An admin adds the bot to ``guild``: Discord sends GUILD_CREATE without ``unavailable``, which
        the client reads as joining a new server."""
        self.guilds.append(guild)
        data = guild.to_dict()
        data.pop("unavailable")
        await self.dispatch("GUILD_CREATE", data)

    def bot_user(self) -> dict[str, Any]:
        return {
            "id": str(self.bot_id),
            "username": "Atelier",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "flags": 0,
            "verified": True,
            "mfa_enabled": False,
        }

    async def _changed_notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, probe: Callable[[], Any], timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            async with self._changed:
                while (value := probe()) is None or value is False:
                    await self._changed.wait()
                return value

    def calls_to(self, fragment: str, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if fragment in c.path and (method is None or c.method == method)]

    # ---------------------------------------------------------------- gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
        try:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                payload = json.loads(frame.data)
                op = payload.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op == 2:
                    if payload["d"].get("token") != self.token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    shard = payload["d"].get("shard") or [0, 1]
                    count = int(shard[1])
                    if not (isinstance(shard, list) and len(shard) == 2 and count >= 1 and 0 <= int(shard[0]) < count):
                        await ws.close(code=4010, message=b"Invalid shard.")  # as Discord closes it
                        break
                    await self._identify(ws, (int(shard[0]), count))
                elif op == 6:
                    session = payload["d"].get("session_id")
                    if session in self._sessions:
                        # Missed events first, in order, then RESUMED: as Discord replays them, each
                        # session only those of its own shard.
                        after = payload["d"].get("seq") or 0
                        shard = self._shard_of_session.get(session, (0, 1))
                        for event in [e for e in self._events if e["s"] > after and self._on_shard(e, shard)]:
                            await ws.send_str(json.dumps(event))
                        self._shard_of_socket[ws] = shard
                        self._sockets.append(ws)
                        await self._send(ws, "RESUMED", {})
                        self.resumes += 1
                        await self._changed_notify()
                    else:
                        await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
            self._shard_of_socket.pop(ws, None)
        return ws

    def connected_shards(self) -> set[tuple[int, int]]:
        """(shard id, shard count) of each live gateway connection."""
        return set(self._shard_of_socket.values())

    @staticmethod
    def shard_of(guild_id: int, shard_count: int) -> int:
        """Discord's rule: a guild's events and interactions go to shard (guild_id >> 22) % shard_count."""
        return (guild_id >> 22) % shard_count

    def _on_shard(self, frame: dict[str, Any], shard: tuple[int, int]) -> bool:
        data = frame.get("d") or {}
        guild_id = data.get("guild_id") or (data.get("id") if str(frame.get("t", "")).startswith("GUILD_") else None)
        return guild_id is None or self.shard_of(int(guild_id), shard[1]) == shard[0]

    async def _identify(self, ws: web.WebSocketResponse, shard: tuple[int, int] = (0, 1)) -> None:
        session = f"session-{snowflake()}"
        self._sessions.add(session)
        self._shard_of_session[session] = shard
        self._shard_of_socket[ws] = shard
        self._sockets.append(ws)
        guilds = [g for g in self.guilds if self.shard_of(g.id, shard[1]) == shard[0]]
        await self._send(
            ws,
            "READY",
            {
                "v": 10,
                "user": self.bot_user(),
                "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
                "session_id": session,
                "shard": list(shard),
                "resume_gateway_url": f"ws://127.0.0.1:{self.port}/",
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
            },
        )
        for guild in guilds:
            await self._send(ws, "GUILD_CREATE", guild.to_dict())

    async def _send(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        self._sequence += 1
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": self._sequence, "d": data}))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to the connected client; while it is away with a resumable session, the event is
        kept and replayed when it resumes."""
        if not self._sockets and not self._sessions:
            raise AssertionError("no client is connected to the simulator")
        self._sequence += 1
        frame = {"op": 0, "t": event, "s": self._sequence, "d": data}
        self._events.append(frame)
        for ws in list(self._sockets):
            if not self._on_shard(frame, self._shard_of_socket.get(ws, (0, 1))):
                continue  # another shard's guild: that connection alone gets it
            try:
                await ws.send_str(json.dumps(frame))
            except ConnectionResetError:
                log.debug("gateway socket closed while sending %s", event)

    # ---------------------------------------------------------------- interactions

    def _find_command(self, guild: GuildState, name: str) -> dict[str, Any]:
        for command in self.commands.get(guild.id, []) + self.commands.get(None, []):
            if command["name"] == name:
                return command
        raise AssertionError(f"/{name} is not a synced command: {[c['name'] for c in self.commands.get(None, [])]}")

    async def dispatch_command(
        self,
        member: MemberState,
        command: str,
        channel: ChannelState,
        options: dict[str, Any],
        *,
        locale: str = "en-US",
        focused: str | None = None,
    ) -> InteractionRecord:
        root_name, *path = command.split()
        root = self._find_command(member.guild, root_name)
        node, nested = root, []
        for name in path:
            node = next((o for o in node.get("options", []) if o["name"] == name and o["type"] in (1, 2)), None)  # type: ignore[assignment]
            if node is None:
                raise AssertionError(f"/{command}: no subcommand {name}")
            nested.append(node)
        resolved: dict[str, Any] = {}
        if focused is not None:
            # What the member is still typing is sent as text, unchecked, and flagged as focused.
            spec = next((o for o in node.get("options", []) if o["name"] == focused), None)
            if spec is None or not spec.get("autocomplete"):
                raise AssertionError(f"/{command}: option {focused} has no autocomplete")
            built = [
                {"name": focused, "type": spec["type"], "value": str(options[focused]), "focused": True},
                *(self._option(node, k, v, resolved) for k, v in options.items() if k != focused),
            ]
        else:
            built = [self._option(node, key, value, resolved) for key, value in options.items()]
            for spec in node.get("options", []):
                if spec.get("required") and spec["name"] not in options:
                    raise AssertionError(f"/{command}: option {spec['name']} is required")
        for sub in reversed(nested):
            built = [{"name": sub["name"], "type": sub["type"], "options": built}]
        data = {"id": root["id"], "name": root_name, "type": 1, "options": built, "guild_id": str(member.guild.id)}
        if resolved:
            data["resolved"] = resolved
        return await self.dispatch_interaction(member, 4 if focused else 2, data, channel, locale=locale)

    async def dispatch_message_command(
        self, member: MemberState, name: str, message: MessageState
    ) -> InteractionRecord:
        commands = self.commands.get(member.guild.id, []) + self.commands.get(None, [])
        command = next((c for c in commands if c["name"] == name and c.get("type") == 3), None)
        if command is None:
            raise AssertionError(f"{name!r} is not a synced message command")
        data = {
            "id": command["id"],
            "name": name,
            "type": 3,
            "target_id": str(message.id),
            "guild_id": str(member.guild.id),
            "resolved": {"messages": {str(message.id): message.to_dict(self.base_url)}},
        }
        return await self.dispatch_interaction(member, 2, data, self.channels[message.channel_id])

    def _option(self, node: dict[str, Any], name: str, value: Any, resolved: dict[str, Any]) -> dict[str, Any]:
        spec = next((o for o in node.get("options", []) if o["name"] == name), None)
        if spec is None:
            raise AssertionError(f"unknown option {name}; known: {[o['name'] for o in node.get('options', [])]}")
        kind = spec["type"]
        if kind in (4, 10):
            low, high = spec.get("min_value"), spec.get("max_value")
            if (low is not None and value < low) or (high is not None and value > high):
                raise AssertionError(f"Discord refuses {name}={value}: outside {low}..{high}")
        if kind == 3 and spec.get("max_length") is not None and len(value) > spec["max_length"]:
            raise AssertionError(f"Discord refuses {name}: longer than {spec['max_length']}")
        if kind == 6:  # user: a member of this guild
            resolved.setdefault("users", {})[str(value.id)] = value.user_dict()
            resolved.setdefault("members", {})[str(value.id)] = {
                k: v for k, v in value.member_dict().items() if k != "user"
            } | {"permissions": str(value.permissions)}
            value = str(value.id)
        elif kind == 8:
            resolved.setdefault("roles", {})[str(value.id)] = value.to_dict()
            value = str(value.id)
        elif kind == 7:
            resolved.setdefault("channels", {})[str(value.id)] = value.to_dict() | {
                "permissions": str(EVERYONE_PERMISSIONS)
            }
            value = str(value.id)
        elif kind == 11:
            filename, data, content_type = value
            attachment = Attachment(snowflake(), filename, data, content_type)
            self.attachments[attachment.id] = attachment
            resolved.setdefault("attachments", {})[str(attachment.id)] = {
                "id": str(attachment.id),
                "filename": filename,
                "size": len(data),
                "url": f"{self.base_url}/attachments/{attachment.id}/{filename}",
                "proxy_url": f"{self.base_url}/attachments/{attachment.id}/{filename}",
                "content_type": content_type,
            }
            value = str(attachment.id)
        return {"name": name, "type": kind, "value": value}

    async def dispatch_interaction(
        self,
        member: MemberState,
        kind: int,
        data: dict[str, Any],
        channel: ChannelState,
        *,
        message: MessageState | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        if locale not in rules.LOCALES:
            raise AssertionError(f"Discord has no locale {locale!r}")
        record = InteractionRecord(
            self,
            snowflake(),
            f"token-{snowflake()}",
            kind,
            member,
            channel,
            time.monotonic(),
            self.now(),
            message=message,
            locale=locale,
        )
        self.interactions[record.token] = record
        payload = {
            "id": str(record.id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "guild_id": str(member.guild.id),
            "channel_id": str(channel.id),
            "channel": channel.to_dict() | {"permissions": str(member.permissions)},
            "member": member.member_dict() | {"permissions": str(member.permissions)},
            "token": record.token,
            "version": 1,
            "app_permissions": str(EVERYONE_PERMISSIONS),
            "locale": locale,
            "guild_locale": member.guild.preferred_locale,
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(member.guild.id)},
            "context": 0,
            "attachment_size_limit": self.attachment_size_limit,
        }
        if message is not None:
            payload["message"] = message.to_dict(self.base_url)
        await self.dispatch("INTERACTION_CREATE", payload)
        return record

    # ---------------------------------------------------------------- REST

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        response = self._fault_for(request) if request.path.startswith("/api/") else None
        if response is None:
            try:
                response = await handler(request)
            except Refusal as refusal:
                response = self._json(refusal.body(), refusal.status)
        if response.status in (401, 403, 429) and response.headers.get("X-RateLimit-Scope") != "shared":
            self.invalid_requests += 1
        body = getattr(request, "_sim_body", None)
        self.calls.append(Call(time.monotonic(), request.method, request.path, response.status, body))
        await self._changed_notify()
        return response

    def _fault_for(self, request: web.Request) -> web.Response | None:
        """An injected fault, else a 429 where a bucket or the global limit is spent; else None, and the
        request is counted against its bucket (whose headers the handler's response then carries)."""
        route = request.path.removeprefix("/api/v10")
        for fault in self._faults:
            if fault.times > 0 and fault.method in (request.method, "*") and fault.route.search(route):
                fault.seen += 1
                if fault.seen % fault.every:
                    continue
                fault.times -= 1
                self.injected += 1
                if fault.status == 429:
                    return self._rate_limited(fault.retry_after or 1.0, scope="user")
                return self._error(fault.status, fault.code or 0, fault.message or "injected by the test")
        now = time.monotonic()
        # Interaction callbacks and their webhooks are not bound to the global limit (Rate Limits: global).
        if not route.startswith(("/interactions/", "/webhooks/")):
            self._global_window = [t for t in self._global_window if now - t < 1.0]
            if len(self._global_window) >= GLOBAL_LIMIT_PER_SECOND:
                return self._rate_limited(1.0 - (now - self._global_window[0]), scope="global")
            self._global_window.append(now)
        named = _bucket(request.method, route)
        if named is None or named[0] not in self.route_limits:
            return None
        limit, per = self.route_limits[named[0]]
        bucket = self._buckets.setdefault(named, _Bucket(limit, per))
        if now - bucket.window_start >= bucket.per:
            bucket.window_start, bucket.used = now, 0
        reset_after = bucket.per - (now - bucket.window_start)
        if bucket.used >= bucket.limit:
            return self._rate_limited(reset_after, scope="user", bucket=bucket, name=named)
        bucket.used += 1
        request[_COUNTED] = (named, bucket, reset_after)
        return None

    def _rate_limited(
        self, retry_after: float, *, scope: str, bucket: _Bucket | None = None, name: tuple[str, str] | None = None
    ) -> web.Response:
        retry_after = round(max(retry_after, 0.001), 3)
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": scope == "global"}
        response = self._json(body, 429)
        response.headers.update(
            {
                # discord.py retries a 429 only when it came through Discord's proxy, which adds Via.
                "Via": "1.1 google",
                "Retry-After": str(max(1, round(retry_after))),
                "X-RateLimit-Scope": scope,
            }
        )
        if scope == "global":
            response.headers["X-RateLimit-Global"] = "true"
        else:
            limit = bucket.limit if bucket else 5
            response.headers.update(self._limit_headers(limit, 0, retry_after, name))
        return response

    @staticmethod
    def _limit_headers(limit: int, remaining: int, reset_after: float, name: tuple[str, str] | None) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": f"{abs(hash(name[0] if name else 'injected')):x}",
        }

    @web.middleware
    async def _limit_headers_on(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        response = await handler(request)
        counted = request.get(_COUNTED)
        if counted is not None and response.status != 429:
            name, bucket, reset_after = counted
            response.headers.update(self._limit_headers(bucket.limit, bucket.limit - bucket.used, reset_after, name))
        return response

    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        # discord.py checks for exactly this content type before parsing the body.
        return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})

    def _error(self, status: int, code: int, message: str) -> web.Response:
        return self._json({"code": code, "message": message}, status)

    async def _payload(self, request: web.Request) -> tuple[dict[str, Any], list[Attachment]]:
        files: list[Attachment] = []
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                elif part.name and part.name.startswith("files["):
                    files.append(
                        Attachment(
                            snowflake(),
                            part.filename or "file",
                            bytes(await part.read()),
                            part.headers.get("Content-Type", "application/octet-stream"),
                        )
                    )
        elif request.can_read_body:
            payload = await request.json()
        else:
            payload = {}
        request._sim_body = payload  # type: ignore[attr-defined]
        rules.check_upload([len(f.data) for f in files], self.attachment_size_limit)
        return payload, files

    def _message_from(
        self, payload: dict[str, Any], files: list[Attachment], channel: ChannelState, **extra: Any
    ) -> MessageState:
        message = MessageState(
            snowflake(),
            channel.id,
            channel.guild_id,
            self.bot_user(),
            content=payload.get("content") or "",
            embeds=payload.get("embeds") or [],
            components=payload.get("components") or [],
            attachments=files,
            flags=payload.get("flags") or 0,
            **extra,
        )
        for attachment in files:
            self.attachments[attachment.id] = attachment
        self.messages[message.id] = message
        return message

    def _edit(self, message: MessageState, payload: dict[str, Any], files: list[Attachment]) -> None:
        for key in ("content", "embeds", "components"):
            if key in payload and payload[key] is not None:
                setattr(message, key, payload[key])
        if "attachments" in payload:
            keep = {
                int(a["id"])
                for a in payload["attachments"]
                if "id" in a and str(a["id"]).isdigit() and int(a["id"]) in self.attachments
            }
            message.attachments = [a for a in message.attachments if a.id in keep] + files
        elif files:
            message.attachments += files
        for attachment in files:
            self.attachments[attachment.id] = attachment

    async def _get_attachment(self, request: web.Request) -> web.StreamResponse:
        attachment = self.attachments.get(int(request.match_info["id"]))
        if attachment is None:
            return self._error(404, 10000, "Unknown attachment")
        return web.Response(body=attachment.data, content_type=attachment.content_type.split(";")[0])

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        parts = request.match_info["path"].strip("/").split("/")
        method = request.method
        # Interaction callbacks and their webhooks are authorised by the interaction's token in the path;
        # every other route wants the bot's token (401 with code 0, as Discord answers a wrong one).
        if parts[0] not in ("interactions", "webhooks") and request.headers.get("Authorization") != f"Bot {self.token}":
            return self._error(401, 0, "401: Unauthorized")
        payload, files = await self._payload(request)
        match parts:
            case ["users", "@me"]:
                return self._json(self.bot_user())
            case ["oauth2", "applications", "@me"]:
                return self._json(
                    {
                        "id": str(self.application_id),
                        "name": "Atelier",
                        "icon": None,
                        "description": "",
                        "bot_public": True,
                        "bot_require_code_grant": False,
                        "verify_key": "0" * 64,
                        "flags": 0,
                        "owner": {"id": str(self.owner_id), "username": "owner", "discriminator": "0", "avatar": None},
                        "team": None,
                    }
                )
            case ["applications", _, "commands"] if method == "PUT":
                rules.check_commands(payload)  # type: ignore[arg-type]
                return self._json(self._store_commands(None, payload))
            case ["applications", _, "guilds", guild_id, "commands"] if method == "PUT":
                rules.check_commands(payload)  # type: ignore[arg-type]
                return self._json(self._store_commands(int(guild_id), payload))
            case ["applications", _, "commands"] | ["applications", _, "guilds", _, "commands"]:
                return self._json(self.commands.get(int(parts[3]) if len(parts) > 3 else None, []))
            case ["interactions", _, token, "callback"]:
                return await self._interaction_callback(token, payload, files)
            case ["webhooks", _, token]:
                return self._followup(token, payload, files)
            case ["webhooks", _, token, "messages", message_ref]:
                return self._webhook_message(method, token, message_ref, payload, files)
            case ["channels", channel_id] if method == "GET":
                channel = self._channel(channel_id)
                rules.check_permissions(channel.bot_permissions)
                return self._json(channel.to_dict())
            case ["channels", channel_id, "messages"] if method == "POST":
                channel = self._channel(channel_id)
                rules.check_permissions(channel.bot_permissions, *rules.needed_to_post(payload, bool(files)))
                rules.check_message(payload, creating=True, has_files=bool(files))
                return self._json(self._message_from(payload, files, channel).to_dict(self.base_url))
            case ["channels", channel_id, "messages", message_id]:
                channel = self._channel(channel_id)
                rules.check_permissions(channel.bot_permissions, *(["embed_links"] if payload.get("embeds") else []))
                message = self._message(channel, message_id)
                if method == "DELETE":
                    if message.author["id"] != str(self.bot_id):
                        # Others' messages need Manage Messages, which Atelier's invite does not ask for.
                        rules.check_permissions(channel.bot_permissions, "manage_messages")
                    message.deleted = True
                    await self.dispatch(
                        "MESSAGE_DELETE",
                        {"id": str(message.id), "channel_id": str(channel.id), "guild_id": str(channel.guild_id)},
                    )
                    return web.Response(status=204)
                if method == "PATCH":
                    rules.check_message(payload, creating=False)
                    self._edit(message, payload, files)
                return self._json(message.to_dict(self.base_url))
            case ["channels", channel_id, "messages", message_id, "reactions", emoji, "@me"]:
                channel = self._channel(channel_id)
                rules.check_permissions(channel.bot_permissions, "read_message_history", "add_reactions")
                message = self._message(channel, message_id)
                from urllib.parse import unquote

                users = message.reactions.setdefault(unquote(emoji), set())
                (users.add if method == "PUT" else users.discard)(self.bot_id)
                return web.Response(status=204)
        log.warning("simulator: unhandled %s /%s", method, "/".join(parts))
        return self._error(404, 0, f"simulator has no route for {method} /{'/'.join(parts)}")

    def _channel(self, channel_id: str) -> ChannelState:
        channel = self.channels.get(int(channel_id))
        if channel is None:
            raise Refusal(404, rules.UNKNOWN_CHANNEL, "Unknown Channel")
        return channel

    def _message(self, channel: ChannelState, message_id: str) -> MessageState:
        message = self.messages.get(int(message_id))
        if message is None or message.deleted or message.channel_id != channel.id:
            raise Refusal(404, rules.UNKNOWN_MESSAGE, "Unknown Message")
        return message

    def _store_commands(self, guild_id: int | None, payload: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stored = []
        for command in payload:
            stored.append(
                command
                | {
                    "id": str(snowflake()),
                    "application_id": str(self.application_id),
                    "version": "1",
                    "type": command.get("type", 1),
                    # Discord answers every command with a description; a context menu's is empty.
                    "description": command.get("description", ""),
                }
            )
        self.commands[guild_id] = stored
        return stored

    def _interaction(self, token: str) -> InteractionRecord | None:
        record = self.interactions.get(token)
        if record is None or self.now() - record.created_sim_time > TOKEN_LIFETIME:
            return None
        return record

    async def _interaction_callback(self, token: str, payload: dict[str, Any], files: list[Attachment]) -> web.Response:
        record = self.interactions.get(token)
        if record is None:
            return self._error(404, 10062, "Unknown interaction")
        if record.callback is not None:
            return self._error(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - record.dispatched_at > 3.0:
            # Discord forgets an interaction that was not acknowledged within three seconds.
            return self._error(404, 10062, "Unknown interaction")
        kind = payload.get("type")
        data = payload.get("data") or {}
        if kind in (6, 7) and record.type not in (3, 5):
            # Updating "the message" only exists for component (and modal) interactions.
            raise Refusal(
                400,
                rules.INVALID_FORM_BODY,
                "Invalid Form Body",
                {
                    "type": {
                        "_errors": [
                            {
                                "code": "INTERACTION_RESPONSE_TYPE_INVALID",
                                "message": "Interaction response type is invalid",
                            }
                        ]
                    }
                },
            )
        if kind == 8 and record.type != 4:
            raise Refusal(400, rules.INVALID_FORM_BODY, "Invalid Form Body", {"type": {"_errors": []}})
        if record.type == 4 and kind != 8:
            raise Refusal(400, rules.INVALID_FORM_BODY, "Invalid Form Body", {"type": {"_errors": []}})
        if kind == 8:
            rules.check_autocomplete(data)
        if kind == 4:
            rules.check_message(data, creating=True, has_files=bool(files))
        elif kind == 7:
            rules.check_message(data, creating=False)
        record.callback = payload
        record.callback_at = time.monotonic()
        resource: dict[str, Any] = {"type": kind}
        if kind in (4, 5):  # a message, or the "thinking…" placeholder of a deferred one
            record.original = self._message_from(
                data, files, record.channel, interaction_id=record.id, type=self._reply_type(record)
            )
            resource["message"] = record.original.to_dict(self.base_url)
        elif kind == 7 and record.message is not None:  # update the clicked message
            self._edit(record.message, data, files)
            resource["message"] = record.message.to_dict(self.base_url)
        elif kind == 9:
            record.modal = data
        flags = data.get("flags") or 0
        return self._json(
            {
                "interaction": {
                    "id": str(record.id),
                    "type": record.type,
                    "response_message_id": str(record.original.id) if record.original else None,
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": bool(flags & EPHEMERAL),
                },
                "resource": resource,
            }
        )

    @staticmethod
    def _reply_type(record: InteractionRecord) -> int:
        return CHAT_INPUT_COMMAND if record.type == 2 else REPLY

    def _followup(self, token: str, payload: dict[str, Any], files: list[Attachment]) -> web.Response:
        record = self._interaction(token)
        if record is None:
            return self._error(401, 50027, "Invalid Webhook Token")
        if record.callback is None:
            return self._error(404, 10015, "Unknown Webhook")
        rules.check_message(payload, creating=True, has_files=bool(files))
        if (
            record.callback.get("type") == 5
            and record.original is not None
            and not record.original.deleted
            and record.original.content == ""
            and not record.original.embeds
            and not record.original.attachments
            and not record.followups
            and record.original.components == []
        ):
            # The first follow-up after a deferred reply replaces its "thinking…" placeholder, and keeps the
            # placeholder's visibility: a public defer cannot become ephemeral (nor the reverse).
            self._edit(record.original, payload, files)
            record.followups.append(record.original)
            record.followup_times.append(time.monotonic())
            return self._json(record.original.to_dict(self.base_url))
        message = self._message_from(
            payload,
            files,
            record.channel,
            interaction_id=record.id,
            webhook_id=self.application_id,
            type=self._reply_type(record),
        )
        record.followups.append(message)
        record.followup_times.append(time.monotonic())
        return self._json(message.to_dict(self.base_url))

    def _webhook_message(
        self, method: str, token: str, message_ref: str, payload: dict[str, Any], files: list[Attachment]
    ) -> web.Response:
        record = self._interaction(token)
        if record is None:
            return self._error(401, 50027, "Invalid Webhook Token")
        if message_ref == "@original":
            message = record.original
        else:
            message = next((m for m in record.followups if m.id == int(message_ref)), None)
        if message is None or message.deleted:
            return self._error(404, 10008, "Unknown Message")
        if method == "DELETE":
            message.deleted = True
            return web.Response(status=204)
        if method == "PATCH":
            rules.check_message(payload, creating=False)
            self._edit(message, payload, files)
        return self._json(message.to_dict(self.base_url))
