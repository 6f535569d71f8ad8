"""/imagine: defer at once, submit through the job service, say where the job stands."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.common import reply_error, request_from
from bot.errors import AtelierError
from bot.services.jobs import MAX_PROMPT_CHARS, SEED_LIMIT, parse_size

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)


class ImagineCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Make an image from a short description")
    @app_commands.describe(
        prompt="What to draw. Inline options work too: --ar 16:9 --seed 42 --no text --style anime --raw",
        negative="What to keep out of the image",
        seed="Same seed and prompt give the same image",
        size="WIDTHxHEIGHT, for example 512x768",
        steps="Denoising steps (more is slower)",
        style="A style preset, for example photographic, anime, watercolor",
        raw="Use your words exactly, without prompt expansion",
    )
    @app_commands.guild_only()
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        negative: str | None = None,
        seed: app_commands.Range[int, 0, SEED_LIMIT - 1] | None = None,
        size: str | None = None,
        steps: app_commands.Range[int, 1, 100] | None = None,
        style: str | None = None,
        raw: bool = False,
    ) -> None:
        # Parse what needs no I/O before answering, so a typo gets a private reply and nothing else.
        try:
            width, height = parse_size(size) if size else (None, None)
        except AtelierError as error:
            await reply_error(interaction, str(error))
            return
        await interaction.response.defer(thinking=True)
        request = request_from(
            interaction,
            prompt,
            negative=negative,
            seed=seed,
            width=width,
            height=height,
            steps=steps,
            style=style,
            raw=raw,
        )
        await submit_and_track(self.bot, interaction, request)


async def submit_and_track(bot: AtelierBot, interaction: discord.Interaction, request) -> None:  # type: ignore[no-untyped-def]
    """Shared by /imagine and the result buttons: one place decides how a queued job is announced."""
    from bot.cogs.results import status_view

    try:
        job = await bot.services.jobs.submit(request)
    except AtelierError as error:
        await reply_error(interaction, str(error))
        return
    shown = job.expanded_prompt if job.expanded_prompt != job.prompt else job.prompt
    header = f"**{discord.utils.escape_markdown(job.prompt[:200])}**\n-# {discord.utils.escape_markdown(shown[:300])}"
    bot.track(job.id, interaction, header)
    try:
        await interaction.edit_original_response(content=f"{header}\n⏳ Queued", view=status_view(job.id))
    except discord.HTTPException:
        log.info("could not show the queued status of job %s", job.id)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(ImagineCog(bot))
