"""A member's own tools: /settings, /info, /restyle, /upscale, and a server's /stats."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import InvalidRequest
from bot.services.delivery import DEFAULT_UPLOAD_LIMIT
from bot.services.inline import parse_aspect
from bot.services.models import profile_for
from bot.services.stats import guild_stats
from bot.services.uploads import save_upload
from bot.ui.messages import info_message, variant_lines
from bot.ui.options import style_suggestions
from bot.ui.replies import request_from
from bot.ui.translator import locale_of, say
from bot.ui.views import submit_and_track

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)


class MemberCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="settings", description="Your defaults for /imagine")
    @app_commands.describe(
        style="Your default style preset",
        aspect="Your default shape, for example 16:9",
        count="Images per request (1–4)",
        raw="Skip prompt expansion",
    )
    @app_commands.autocomplete(style=style_suggestions)
    @app_commands.guild_only()
    async def settings(
        self,
        interaction: discord.Interaction,
        style: str | None = None,
        aspect: str | None = None,
        raw: bool | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
    ) -> None:
        if aspect is not None:
            parse_aspect(aspect)
        prefs = await self.bot.services.jobs.set_preferences(
            interaction.guild_id or 0, interaction.user.id, style=style, aspect=aspect, raw=raw, count=count
        )
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(prefs.items())) or say(interaction, "settings.none")
        await interaction.response.send_message(say(interaction, "settings.saved", shown=shown), ephemeral=True)

    @app_commands.command(name="info", description="Full parameters of a result, to reproduce it")
    @app_commands.describe(job_id="The id in the result's footer")
    async def info(self, interaction: discord.Interaction, job_id: app_commands.Range[str, 1, 64]) -> None:
        job = await self.bot.services.jobs.visible_to(
            job_id.strip(), guild_id=interaction.guild_id, user_id=interaction.user.id
        )
        lineage = await self.bot.services.jobs.lineage(job.id)
        await interaction.response.send_message(**info_message(job, locale_of(interaction), lineage), ephemeral=True)

    async def _from_attachment(
        self, interaction: discord.Interaction, image: discord.Attachment, prompt: str, **options: object
    ) -> None:
        limit = interaction.guild.filesize_limit if interaction.guild else DEFAULT_UPLOAD_LIMIT
        # Checked before anything is downloaded or queued.
        if image.size > limit:
            raise InvalidRequest("errors.upload_too_large", size=image.size / 2**20, limit=limit / 2**20)
        if image.content_type and not image.content_type.startswith("image/"):
            raise InvalidRequest("errors.upload_format")
        await interaction.response.defer(thinking=True)
        settings = self.bot.settings
        try:
            data = await image.read()
        except discord.HTTPException as error:
            raise InvalidRequest("errors.attachment_unreadable") from error
        profile = profile_for(settings.image_model)
        path, width, height = save_upload(
            data,
            settings.data_dir / "uploads",
            byte_limit=limit,
            max_side=min(settings.max_side, profile.side * 2),
            multiple=profile.multiple,
        )
        request = request_from(
            interaction, prompt, init_image=str(path), width=width, height=height, count=1, **options
        )
        await submit_and_track(self.bot, interaction, request)

    @app_commands.command(name="restyle", description="Redraw your image in another style")
    @app_commands.describe(
        image="The image to redraw (PNG, JPEG or WebP)",
        style="A style preset or a description",
        strength="How much to change (0.1–1)",
    )
    @app_commands.autocomplete(style=style_suggestions)
    @app_commands.guild_only()
    async def restyle(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        style: app_commands.Range[str, 1, 300],
        strength: app_commands.Range[float, 0.1, 1.0] = 0.6,
    ) -> None:
        from bot.services.expansion import STYLES

        preset = style.strip().lower()
        if preset in STYLES:
            await self._from_attachment(
                interaction, image, f"in {preset} style", kind="img2img", strength=strength, style=preset
            )
        else:
            await self._from_attachment(interaction, image, style, kind="img2img", strength=strength, raw=True)

    @app_commands.command(name="upscale", description="Enlarge and enhance an image")
    @app_commands.describe(image="The image to enlarge (PNG, JPEG or WebP)")
    @app_commands.guild_only()
    async def upscale(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        if image.width and image.height:
            self.bot.services.jobs.upscaled_size(image.width, image.height, self.bot.settings.image_model)
        await self._from_attachment(interaction, image, "high detail, sharp focus", kind="upscale", raw=True)

    @app_commands.command(name="stats", description="This server's images, top-rated results and averages")
    @app_commands.guild_only()
    async def stats(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True)
        stats = await guild_stats(self.bot.services.db, interaction.guild_id or 0)
        embed = discord.Embed(title=say(interaction, "stats.title"))
        per_day = "\n".join(f"{day}: {n}" for day, n in stats["images_per_day"].items()) or say(
            interaction, "stats.no_images"
        )
        embed.add_field(name=say(interaction, "stats.per_day"), value=per_day, inline=False)
        top = "\n".join(f"{t['average']}★ ({t['ratings']}) {t['prompt'][:60]}" for t in stats["top_rated"]) or say(
            interaction, "stats.no_ratings"
        )
        embed.add_field(name=say(interaction, "stats.top_rated"), value=top, inline=False)
        for label, key in (("stats.by_style", "average_by_style"), ("stats.by_model", "average_by_model")):
            name = say(interaction, label)
            value = "\n".join(f"{k}: {v}" for k, v in stats[key].items()) or "–"
            embed.add_field(name=name, value=value)
        variants = await self.bot.services.bandit.report(interaction.guild_id or 0)
        if variants["learning"]:
            lines = variant_lines(variants, locale_of(interaction))
            embed.add_field(name=say(interaction, "quality.stats_variants"), value=lines[:1024], inline=False)
        await interaction.followup.send(embed=embed, ephemeral=True)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(MemberCog(bot))
