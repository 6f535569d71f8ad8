"""/help, in the member's language, and a short welcome when Atelier joins a server."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal, get_args

import discord
from discord import app_commands
from discord.ext import commands

from bot import i18n
from bot.services.models import profile_for
from bot.ui.translator import guild_locale, locale_of

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)

# The commands /help explains, in the order a new member meets them (each has a help.NAME string and a
# choices.NAME translation); a Literal, so Discord offers them as choices.
HelpTopic = Literal["imagine", "settings", "restyle", "upscale", "info", "usage", "stats", "help", "atelier", "sync"]
HELP_TOPICS: tuple[str, ...] = get_args(HelpTopic)


def welcome_channel(guild: discord.Guild) -> discord.TextChannel | None:
    """The server's system channel where Atelier may post there, else the first text channel it may."""
    me = guild.me
    candidates = [guild.system_channel] if guild.system_channel is not None else []
    candidates += sorted(guild.text_channels, key=lambda c: (c.position, c.id))
    for channel in candidates:
        permissions = channel.permissions_for(me)
        if permissions.view_channel and permissions.send_messages:
            return channel
    return None


class HelpCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    def _topic_text(self, topic: str, locale: str) -> str:
        if topic == "imagine":
            settings = self.bot.settings
            high = min(profile_for(settings.image_model).max_steps, settings.max_steps)
            return i18n.text(locale, "help.imagine", steps=f"1–{high}")
        return i18n.text(locale, f"help.{topic}")

    @app_commands.command(name="help", description="How to use Atelier, or one of its commands")
    @app_commands.describe(command="The command to explain")
    async def help(self, interaction: discord.Interaction, command: HelpTopic | None = None) -> None:
        locale = locale_of(interaction)
        embed = discord.Embed(title=i18n.text(locale, "help.title"), colour=discord.Colour.blurple())
        if command is None:
            listing = "\n".join(self._topic_text(topic, locale).split("\n")[0] for topic in HELP_TOPICS)
            overview = i18n.text(locale, "help.overview")
            embed.description = f"{overview}\n\n__{i18n.text(locale, 'help.commands')}__\n{listing}"[:4096]
            embed.set_footer(text=i18n.text(locale, "help.languages"))
        else:
            embed.description = self._topic_text(command, locale)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        channel = welcome_channel(guild)
        if channel is None:
            log.info("joined guild %s; no channel to greet it in", guild.id)
            return
        try:
            await channel.send(i18n.text(guild_locale(guild), "welcome.text"))
        except discord.HTTPException as error:
            log.info("could not greet guild %s in channel %s: %s", guild.id, channel.id, error)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(HelpCog(bot))
