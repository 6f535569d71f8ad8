"""Reactions → ratings. Raw events, so reactions on messages from before a restart count too."""

from __future__ import annotations

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

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        is_bot = bool(payload.member and payload.member.bot) or payload.user_id == getattr(self.bot.user, "id", None)
        outcome = await self.ratings.add(
            message_id=payload.message_id, user_id=payload.user_id, emoji=str(payload.emoji), is_bot=is_bot
        )
        if outcome is not None:
            log.info("rating %d on job %s by %s", outcome.score, outcome.job_id, payload.user_id)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self.ratings.remove(message_id=payload.message_id, user_id=payload.user_id, emoji=str(payload.emoji))


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(RatingsCog(bot))
