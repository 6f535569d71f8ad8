"""/describe and the "Describe with Atelier" message menu: a caption and four prompts from an image."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.ui.attachments import check_attachment, image_of, source_from
from bot.ui.edit_views import DescribePromptButton, submit_describe

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)


class DescribeCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Describe with Atelier", callback=self.describe_message)
        self.menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="describe", description="Describe an image and suggest four prompts from it")
    @app_commands.describe(image="The image to describe (PNG, JPEG or WebP)")
    @app_commands.guild_only()
    async def describe(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        await self._describe(interaction, image)

    async def describe_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self._describe(interaction, image_of(message))

    async def _describe(self, interaction: discord.Interaction, attachment: discord.Attachment) -> None:
        check_attachment(interaction, attachment)
        await interaction.response.defer(thinking=True)
        source = await source_from(self.bot, interaction, attachment)
        await submit_describe(self.bot, interaction, source)


async def setup(bot: AtelierBot) -> None:
    bot.add_dynamic_items(DescribePromptButton)
    await bot.add_cog(DescribeCog(bot))
