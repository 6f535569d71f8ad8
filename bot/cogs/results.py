"""The buttons on status and result messages, registered so that they answer after a restart."""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord.ext import commands

from bot.ui.views import DYNAMIC_ITEMS

if TYPE_CHECKING:
    from bot.app import AtelierBot


class ResultsCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot


async def setup(bot: AtelierBot) -> None:
    bot.add_dynamic_items(*DYNAMIC_ITEMS)
    await bot.add_cog(ResultsCog(bot))
