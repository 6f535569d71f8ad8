"""/imagine: defer at once, submit through the job service, say where the job stands."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.services.jobs import MAX_PROMPT_CHARS, SEED_LIMIT, parse_size
from bot.services.models import profile_for
from bot.ui.options import size_suggestions, steps_suggestions, style_suggestions
from bot.ui.replies import request_from
from bot.ui.views import submit_and_track

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)


class ImagineCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        # Discord itself keeps `steps` within what the model does well (1–8 for the turbo models) and
        # the host allows; a server's lower limit is suggested by autocomplete and checked on submit.
        steps = self.imagine._params["steps"]
        steps.max_value = min(profile_for(bot.settings.image_model).max_steps, bot.settings.max_steps)

    @app_commands.command(name="imagine", description="Make an image from a short description")
    @app_commands.describe(
        prompt="What to draw. Inline options work too: --ar 16:9 --seed 42 --no text --style anime --raw",
        negative="What to keep out of the image",
        seed="Same seed and prompt give the same image",
        size="WIDTHxHEIGHT, for example 512x768",
        steps="Denoising steps: more is slower; the range is the model's",
        style="A style preset, for example photographic, anime, watercolor",
        raw="Use your words exactly, without prompt expansion",
    )
    @app_commands.autocomplete(style=style_suggestions, steps=steps_suggestions, size=size_suggestions)
    @app_commands.guild_only()
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        negative: app_commands.Range[str, 1, MAX_PROMPT_CHARS] | None = None,
        seed: app_commands.Range[int, 0, SEED_LIMIT - 1] | None = None,
        size: app_commands.Range[str, 1, 20] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        style: app_commands.Range[str, 1, 50] | None = None,
        raw: bool = False,
    ) -> None:
        # Parse what needs no I/O before answering, so a typo gets a private reply and nothing else.
        width, height = parse_size(size) if size else (None, None)
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


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(ImagineCog(bot))
