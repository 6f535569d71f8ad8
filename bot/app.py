"""The Discord bot: a Bot subclass that loads one cog per feature and delivers finished jobs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.config import Settings

if TYPE_CHECKING:
    from bot.cli.wiring import Services
    from bot.services.records import JobRecord
from bot.errors import AtelierError
from bot.services.delivery import DeliveryService
from bot.services.health import HEALTH_WRITE_SECONDS, health_file, write_gateway_health
from bot.ui.delivery import deliver_job
from bot.ui.replies import reply_error, reply_refusal
from bot.ui.translator import CatalogTranslator, locale_of, relative_time, say
from engine.background import BackgroundLoop, wait_for_event
from engine.queue.database import RESULT_NEWS, CommitWatch

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.cogs.imagine",
    "bot.cogs.results",
    "bot.cogs.ratings",
    "bot.cogs.admin",
    "bot.cogs.member",
    "bot.cogs.help",
    "bot.cogs.edit",
    "bot.cogs.describe",
)

# Interaction tokens live 15 minutes from the interaction's creation; leave a margin for the upload.
INTERACTION_TOKEN_SECONDS = 14 * 60
# How often the queue-depth and undeliverable gauges are read from the database.
METRICS_STATUS_SECONDS = 15.0
# Deliveries and progress edits in flight at once: one slow or rate-limited channel never holds up the rest.
CONCURRENT_SENDS = 8
# Results, progress and cancellations arrive as events (a commit to the database, a result applied
# from Redis); this sweep only catches what an event could not announce, such as a delivery's back-off
# coming due.
DELIVERY_SWEEP_SECONDS = 5.0
PREVIEW_FILENAME = "preview.jpg"


def preview_digest(preview: bytes) -> str:
    return hashlib.sha256(preview).hexdigest()


def token_usable(created_at: datetime, now: datetime) -> bool:
    """Discord's 15 minutes run from the interaction's creation (its snowflake), not from when the bot
    began tracking the job: a job queued a while after the command has less time left."""
    return (now - created_at).total_seconds() < INTERACTION_TOKEN_SECONDS


@dataclass
class PendingReply:
    """Who to answer for a queued job, and the status message to edit meanwhile: the interaction's own
    response for a slash command, a follow-up of its own for a button or a modal."""

    interaction: discord.Interaction
    header: str = ""
    status_message: discord.WebhookMessage | None = None
    shown: str = ""
    shown_preview: str = ""  # the digest of the preview picture shown, "" for none
    status_gone: bool = False

    @property
    def usable(self) -> bool:
        return token_usable(self.interaction.created_at, discord.utils.utcnow())

    async def show(self, text: str, preview: bytes | None = None) -> None:
        """Edit the status message; a new preview picture replaces the one shown (an edit without
        one keeps it)."""
        changes: dict[str, Any] = {"content": text}
        if preview is not None:
            changes["attachments"] = [discord.File(io.BytesIO(preview), filename=PREVIEW_FILENAME)]
        if self.status_message is not None:
            await self.status_message.edit(**changes)
        else:
            await self.interaction.edit_original_response(**changes)
        self.shown = text
        if preview is not None:
            self.shown_preview = preview_digest(preview)

    async def remove_status(self) -> None:
        try:
            if self.status_message is not None:
                await self.status_message.delete()
            else:
                await self.interaction.delete_original_response()
        except discord.HTTPException:
            pass  # already gone, or the token expired: the result is out either way


class AtelierBot(commands.Bot):
    def __init__(self, settings: Settings, services: Services, **options: object) -> None:
        intents = discord.Intents.default()
        intents.guilds = True
        intents.guild_reactions = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            # Members use slash commands and /help; discord.py's text-command "help" would only answer
            # "@Atelier help" with a list of prefix commands that do not exist.
            help_command=None,
            intents=intents,
            owner_ids=set(settings.owner_ids) or None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            # A rate limit longer than this raises instead of sleeping: the delivery backs off that job.
            max_ratelimit_timeout=30.0,
            **options,  # type: ignore[arg-type]
        )
        self.settings = settings
        self.services = services
        self.metrics = services.metrics
        self.delivery = DeliveryService(
            services.db, safety_threshold=settings.safety_threshold, metrics=self.metrics, shards=settings.shards
        )
        self.pending_replies: dict[str, PendingReply] = {}
        self.delivery_sweep_seconds = DELIVERY_SWEEP_SECONDS
        # Status messages are edited at most this often, however many events arrive.
        self.progress_interval_seconds = 1.0
        self._loops: list[BackgroundLoop] = []
        self._events = asyncio.Event()  # something changed: a result, a step, a cancellation
        self._stopping = asyncio.Event()
        # Woken at once by the engines' news (results, steps, cancellations), and by any other commit
        # at the watch's next look.
        self._commits = CommitWatch(services.db.url, topic=RESULT_NEWS)
        self._following: list[asyncio.Task[None]] = []
        self._sends = asyncio.Semaphore(CONCURRENT_SENDS)
        self._deliveries: set[asyncio.Task[None]] = set()
        self._pumping: asyncio.Task[None] | None = None
        self._stop_pumping = asyncio.Event()
        self._health_lock = asyncio.Lock()
        self.health_path = health_file(settings.data_dir)
        self.health_write_seconds = HEALTH_WRITE_SECONDS

    async def setup_hook(self) -> None:
        # Before the cogs and any sync: every command's names and descriptions go out localized.
        await self.tree.set_translator(CatalogTranslator())
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.tree.on_error = self.on_app_command_error
        revived = await self.delivery.revive_undeliverable()
        if revived:
            log.info("trying %d undeliverable result(s) again", revived)
        if self.settings.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))
        self._loops = [
            BackgroundLoop(self._expire_pass, 60.0, name="atelier-expire", ready=self.wait_until_ready).start(),
        ]
        self._following = [
            asyncio.create_task(self._follow_events(), name="atelier-delivery"),
            asyncio.create_task(self._watch_commits(), name="atelier-commits"),
        ]
        self._loops.append(BackgroundLoop(self._write_health, self.health_write_seconds, name="atelier-health").start())
        if self.settings.metrics_port is not None:
            self._loops.append(BackgroundLoop(self._status_pass, METRICS_STATUS_SECONDS, name="atelier-status").start())
        pump = getattr(self.services.queue, "pump", None)
        if pump is not None:
            # Redis: engines report through a results stream that the bot applies to the database.
            self._pumping = asyncio.create_task(
                pump(self._stop_pumping, on_applied=self.notify), name="atelier-results"
            )

    def notify(self) -> None:
        """Something a member may be waiting for has changed: deliver and show it now."""
        self._events.set()

    async def _watch_commits(self) -> None:
        """Every commit to the database by an engine, another bot process or this one's other
        connections is an event: a result recorded, a step reached, a job cancelled."""
        try:
            while not self._stopping.is_set():
                if await self._commits.wait(self.delivery_sweep_seconds, self._stopping):
                    self.notify()
        except Exception:
            log.exception("the database watch failed; deliveries fall back on the sweep")
        finally:
            await self._commits.close()

    async def _follow_events(self) -> None:
        """Deliver and show progress when an event arrives, or at the slow sweep. Progress edits are
        throttled to one pass per progress_interval_seconds; a delivery never waits for them."""
        ready = asyncio.ensure_future(self.wait_until_ready())
        stopped = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        stopped.cancel()
        last_progress = float("-inf")
        progress: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                self._events.clear()
                try:
                    await self._deliver_pass()
                except Exception:
                    log.exception("a delivery pass failed")
                # Every event or sweep may change what a status message shows; one pass at a time,
                # and none sooner than the interval after the last.
                timeout = self.delivery_sweep_seconds
                now = time.monotonic()
                if progress is not None and not progress.done():
                    timeout = min(timeout, self.progress_interval_seconds)
                elif now - last_progress >= self.progress_interval_seconds:
                    last_progress = now
                    progress = asyncio.create_task(self._progress_or_log(), name="atelier-progress")
                else:
                    timeout = min(timeout, max(0.01, last_progress + self.progress_interval_seconds - now))
                await self._next_event(timeout)
        finally:
            if progress is not None:
                await asyncio.gather(progress, return_exceptions=True)

    async def _next_event(self, timeout: float) -> bool:
        """Wait for an event or a stop, at most ``timeout``: True if an event came."""
        return await wait_for_event(self._events, timeout) and not self._stopping.is_set()

    async def _progress_or_log(self) -> None:
        try:
            await self._progress_pass()
        except Exception:
            log.exception("a progress pass failed")

    def track(
        self,
        job_id: str,
        interaction: discord.Interaction,
        header: str = "",
        status_message: discord.WebhookMessage | None = None,
    ) -> None:
        """Remember who to answer; after a restart, or past the token's life, results go to the channel."""
        self.pending_replies[job_id] = PendingReply(interaction, header, status_message)

    async def _progress_pass(self) -> None:
        """Edit the status messages whose text a member would see change (state, place in line, step);
        passes run at most once a second, edits side by side."""
        await asyncio.gather(*(self._show_progress(job_id, p) for job_id, p in list(self.pending_replies.items())))

    async def _show_progress(self, job_id: str, pending: PendingReply) -> None:
        if pending.status_gone or not pending.usable:
            return
        async with self._sends:
            try:
                progress = await self.services.jobs.progress(job_id)
            except Exception:
                log.debug("no progress for job %s", job_id, exc_info=True)
                return
            if progress.status not in ("queued", "running") or self.pending_replies.get(job_id) is not pending:
                return  # ended (or being delivered): never edit over the result
            shown = progress.describe(locale_of(pending.interaction))
            text = f"{pending.header}\n{shown}" if pending.header else shown
            preview = (
                progress.preview
                if progress.preview and preview_digest(progress.preview) != pending.shown_preview
                else None
            )
            if text == pending.shown and preview is None:
                return
            try:
                await pending.show(text, preview)
            except discord.NotFound:
                pending.status_gone = True  # the member deleted it: stop editing, still deliver
            except discord.HTTPException:
                log.debug("progress edit failed for job %s", job_id, exc_info=True)

    async def _expire_pass(self) -> None:
        if self.settings.queued_ttl_seconds is not None:
            await self.services.jobs.expire_queued(self.settings.queued_ttl_seconds)

    async def _deliver_pass(self) -> None:
        """Claim what is ready and post each in a task of its own, so one stuck job never delays another."""
        for job in await self.delivery.claim_ready():
            task = asyncio.create_task(self._deliver(job), name=f"atelier-deliver-{job.id}")
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, job: JobRecord) -> None:
        async with self._sends:
            await deliver_job(self, job)

    @property
    def gateway_connected(self) -> bool:
        socket = getattr(self.ws, "socket", None)
        return self.is_ready() and not self.is_closed() and socket is not None and not socket.closed

    async def on_ready(self) -> None:
        await self._write_health()

    async def on_resumed(self) -> None:
        await self._write_health()

    async def on_disconnect(self) -> None:
        await self._write_health()

    async def _write_health(self) -> None:
        # One write at a time, each with the state as it is when it starts: the last write is the truth.
        async with self._health_lock:
            connected = self.gateway_connected
            self.metrics.gateway_connected.set(int(connected))
            await asyncio.to_thread(write_gateway_health, self.health_path, connected=connected)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        data = interaction.data or {}
        # A button's custom_id carries a job id: its family (the part before the first ":") is the label.
        name = str(data.get("name") or str(data.get("custom_id", "")).split(":", 1)[0] or "-")
        self.metrics.interaction(interaction.type.name, name)

    async def _status_pass(self) -> None:
        from bot.services.status import queue_status

        self.metrics.status(await queue_status(self.services))

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: discord.app_commands.AppCommandError
    ) -> None:
        # A refusal raised anywhere under a command (policy, quota, a bad option) is the member's answer.
        original = getattr(error, "original", error)
        if isinstance(original, AtelierError):
            self.metrics.refused(original)
            await reply_refusal(interaction, original)
            return
        if isinstance(error, discord.app_commands.CommandOnCooldown):
            ready = discord.utils.utcnow() + timedelta(seconds=error.retry_after)
            await reply_error(interaction, say(interaction, "errors.command_cooldown", when=relative_time(ready)))
            return
        if isinstance(error, discord.app_commands.CheckFailure):
            await reply_error(interaction, say(interaction, "errors.need_manage_server"))
            return
        if isinstance(error, discord.app_commands.TransformerError):
            await reply_error(interaction, say(interaction, "errors.bad_option", option=str(error.value)[:40]))
            return
        log.exception("command %s failed", interaction.command and interaction.command.name, exc_info=error)
        await reply_error(interaction, say(interaction, "errors.internal"))

    async def close(self) -> None:
        # Stopped between passes, never cancelled mid-query (see engine.background), and waited for, so
        # nothing still uses the database when the caller disposes of it.
        self._stop_pumping.set()
        self._stopping.set()
        self._events.set()  # the delivery task wakes, sees the stop, and ends between passes
        await asyncio.gather(*self._following, return_exceptions=True)
        await asyncio.gather(*(loop.stop() for loop in self._loops))
        # Deliveries in flight finish (each is one post and one write); none is cut off mid-write.
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._pumping is not None:
            await asyncio.gather(self._pumping, return_exceptions=True)
        self._loops, self._pumping, self._following = [], None, []
        await super().close()
        await self._write_health()


class ShardedAtelierBot(AtelierBot, commands.AutoShardedBot):
    """One process running a group of shards (ATELIER_SHARD_COUNT, ATELIER_SHARD_IDS) over one gateway
    connection each; it delivers the results of its shards' guilds, whose interactions it holds."""


def create_bot(settings: Settings, services: Services, **options: object) -> AtelierBot:
    """The bot for these settings: sharded when ATELIER_SHARD_COUNT is set."""
    shards = settings.shards
    if shards is None:
        return AtelierBot(settings, services, **options)
    count, ids = shards
    return ShardedAtelierBot(settings, services, shard_count=count, shard_ids=ids, **options)
