"""Reactions → ratings. Raw events, so reactions on messages from before a restart count too."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)


class RatingsCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self.ratings = bot.services.ratings
        # discord.py runs each event handler as its own task; without this, two quick reactions by one
        # member could be stored in the wrong order and "the latest wins" would pick the older one.
        # asyncio.Lock is FIFO, so ratings are applied in the order the events arrived.
        self._in_order = asyncio.Lock()

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        is_bot = bool(payload.member and payload.member.bot) or payload.user_id == getattr(self.bot.user, "id", None)
        async with self._in_order:
            outcome = await self.ratings.add(
                message_id=payload.message_id, user_id=payload.user_id, emoji=str(payload.emoji), is_bot=is_bot
            )
        if outcome is not None:
            log.info("rating %d on job %s by %s", outcome.score, outcome.job_id, payload.user_id)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        async with self._in_order:
            await self.ratings.remove(message_id=payload.message_id, user_id=payload.user_id, emoji=str(payload.emoji))


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(RatingsCog(bot))
