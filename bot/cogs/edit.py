"""/edit and the "Edit with Atelier" message menu: change an image by instruction, or repair one part."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.services.edit_plans import MAX_INSTRUCTION_CHARS
from bot.services.edits import SourceImage
from bot.ui.attachments import check_attachment, image_of, source_from
from bot.ui.edit_views import EditImageModal, MagicEditButton, submit_edit
from bot.ui.translator import locale_of
from engine.contract import SEED_LIMIT

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)


class EditCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        # Context menus cannot be declared inside a cog class; this one is added with the cog.
        self.menu = app_commands.ContextMenu(name="Edit with Atelier", callback=self.edit_message)
        self.menu.guild_only = True

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="edit", description="Change an image by instruction, or repair one part of it")
    @app_commands.describe(
        image="The image to change (PNG, JPEG or WebP)",
        instruction="For example: make it winter · remove the car · replace the sky with fireworks",
        strength="How much to change (0.1–1); the server's setting when left out",
        seed="Same image, instruction and seed give the same result",
    )
    @app_commands.guild_only()
    async def edit(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        instruction: app_commands.Range[str, 1, MAX_INSTRUCTION_CHARS],
        strength: app_commands.Range[float, 0.1, 1.0] | None = None,
        seed: app_commands.Range[int, 0, SEED_LIMIT - 1] | None = None,
    ) -> None:
        # Refused before anything is downloaded or queued, with a private reply.
        check_attachment(interaction, image)
        await interaction.response.defer(thinking=True)
        source = await source_from(self.bot, interaction, image)
        await submit_edit(self.bot, interaction, instruction, source, strength=strength, seed=seed)

    async def edit_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        attachment = image_of(message)
        check_attachment(interaction, attachment)

        async def load(submitted: discord.Interaction, index: int) -> SourceImage:
            return await source_from(self.bot, submitted, attachment)

        modal = EditImageModal(f"atelier:edit-message:{message.id}", load, locale=locale_of(interaction))
        await interaction.response.send_modal(modal)


async def setup(bot: AtelierBot) -> None:
    bot.add_dynamic_items(MagicEditButton)
    await bot.add_cog(EditCog(bot))
