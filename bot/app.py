"""The Discord bot: a Bot subclass that loads one cog per feature and delivers finished jobs."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.config import Settings

if TYPE_CHECKING:
    from bot.cli.wiring import Services
from bot.errors import AtelierError
from bot.services.delivery import DeliveryService
from bot.ui.delivery import deliver_job
from bot.ui.replies import reply_error
from engine.background import BackgroundLoop

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.cogs.imagine",
    "bot.cogs.results",
    "bot.cogs.ratings",
    "bot.cogs.admin",
    "bot.cogs.member",
)

# Interaction tokens live 15 minutes; leave a margin for the upload itself.
INTERACTION_TOKEN_SECONDS = 14 * 60


@dataclass
class PendingReply:
    interaction: discord.Interaction
    created: float
    header: str = ""
    shown: str = ""
    status_gone: bool = False

    @property
    def usable(self) -> bool:
        return time.monotonic() - self.created < INTERACTION_TOKEN_SECONDS


class AtelierBot(commands.Bot):
    def __init__(self, settings: Settings, services: Services, **options: object) -> None:
        intents = discord.Intents.default()
        intents.guilds = True
        intents.guild_reactions = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            owner_ids=set(settings.owner_ids) or None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            **options,  # type: ignore[arg-type]
        )
        self.settings = settings
        self.services = services
        self.delivery = DeliveryService(services.db, safety_threshold=settings.safety_threshold)
        self.pending_replies: dict[str, PendingReply] = {}
        self.delivery_poll_seconds = 0.25
        self.progress_interval_seconds = 1.0
        self._loops: list[BackgroundLoop] = []
        self._pumping: asyncio.Task[None] | None = None
        self._stop_pumping = asyncio.Event()

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.tree.on_error = self.on_app_command_error
        if self.settings.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))
        self._loops = [
            BackgroundLoop(
                self._deliver_pass, self.delivery_poll_seconds, name="atelier-delivery", ready=self.wait_until_ready
            ).start(),
            BackgroundLoop(
                self._progress_pass,
                self.progress_interval_seconds,
                name="atelier-progress",
                ready=self.wait_until_ready,
            ).start(),
        ]
        pump = getattr(self.services.queue, "pump", None)
        if pump is not None:
            # Redis: engines report through a results stream that the bot applies to the database.
            self._pumping = asyncio.create_task(pump(self._stop_pumping), name="atelier-results")

    def track(self, job_id: str, interaction: discord.Interaction, header: str = "") -> None:
        """Remember who to answer; after a restart, or past the token's life, results go to the channel."""
        self.pending_replies[job_id] = PendingReply(interaction, time.monotonic(), header)

    async def _progress_pass(self) -> None:
        """Edit each waiting member's status message; passes run at most once a second (Discord
        rate-limits edits)."""
        for job_id, pending in list(self.pending_replies.items()):
            if pending.status_gone or not pending.usable:
                continue
            try:
                progress = await self.services.jobs.progress(job_id)
            except Exception:
                log.debug("no progress for job %s", job_id, exc_info=True)
                continue
            if progress.status not in ("queued", "running"):
                continue
            text = f"{pending.header}\n{progress.describe()}" if pending.header else progress.describe()
            if text == pending.shown:
                continue
            try:
                await pending.interaction.edit_original_response(content=text)
                pending.shown = text
            except discord.NotFound:
                pending.status_gone = True  # the member deleted it: stop editing, still deliver
            except discord.HTTPException:
                log.debug("progress edit failed for job %s", job_id, exc_info=True)

    async def _deliver_pass(self) -> None:
        for job in await self.delivery.pending():
            if await self.delivery.claim(job.id):
                await deliver_job(self, job)

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: discord.app_commands.AppCommandError
    ) -> None:
        # A refusal raised anywhere under a command (policy, quota, a bad option) is the member's answer.
        original = getattr(error, "original", error)
        if isinstance(original, AtelierError):
            await reply_error(interaction, str(original))
            return
        if isinstance(error, discord.app_commands.CheckFailure):
            message = "You need the Manage Server permission for this."
            if isinstance(error, discord.app_commands.CommandOnCooldown):
                message = f"Slow down: try again in {error.retry_after:.0f}s."
            await reply_error(interaction, message)
            return
        if isinstance(error, discord.app_commands.TransformerError):
            await reply_error(interaction, str(error))
            return
        log.exception("command %s failed", interaction.command and interaction.command.name, exc_info=error)
        await reply_error(interaction, "Something went wrong on our side; it has been logged.")

    async def close(self) -> None:
        # Stopped between passes, never cancelled mid-query (see engine.background), and waited for, so
        # nothing still uses the database when the caller disposes of it.
        self._stop_pumping.set()
        await asyncio.gather(*(loop.stop() for loop in self._loops))
        if self._pumping is not None:
            await asyncio.gather(self._pumping, return_exceptions=True)
        self._loops, self._pumping = [], None
        await super().close()
