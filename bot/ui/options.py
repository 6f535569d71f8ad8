"""Suggestions for slash-command options, from the server's presets and limits: members pick a value
Atelier accepts instead of guessing one. A value typed anyway is still checked by the job service."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot import i18n
from bot.services.expansion import STYLES
from bot.ui.translator import locale_of

if TYPE_CHECKING:
    from bot.app import AtelierBot

MAX_SUGGESTIONS = 25  # Discord's limit on autocomplete choices


def style_label(style: str, locale: str) -> str:
    localized = i18n.text(locale, f"styles.{style}")
    return style if localized == style else f"{localized} ({style})"


async def style_suggestions(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The presets whose name (or its translation) contains what the member typed; the server's default
    style first."""
    bot: AtelierBot = interaction.client  # type: ignore[assignment]
    locale = locale_of(interaction)
    limits = await bot.services.jobs.limits(interaction.guild_id or 0)
    typed = current.strip().casefold()
    ordered = sorted(STYLES, key=lambda name: (name != limits.default_style, name))
    return [
        app_commands.Choice(name=style_label(name, locale), value=name)
        for name in ordered
        if typed in name or typed in style_label(name, locale).casefold()
    ][:MAX_SUGGESTIONS]


async def steps_suggestions(
    interaction: discord.Interaction, current: int | float | str
) -> list[app_commands.Choice[int]]:
    """1 to the most steps this model allows on this server (1–8 for the turbo models)."""
    bot: AtelierBot = interaction.client  # type: ignore[assignment]
    limits = await bot.services.jobs.limits(interaction.guild_id or 0)
    values = list(range(1, limits.max_steps + 1))
    if len(values) > MAX_SUGGESTIONS:  # a slow model: its default and round numbers
        values = sorted({1, limits.default_steps, *range(5, limits.max_steps + 1, 5), limits.max_steps})
    typed = str(current).strip()
    return [app_commands.Choice(name=str(v), value=v) for v in values if typed in str(v)][:MAX_SUGGESTIONS]


async def size_suggestions(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    bot: AtelierBot = interaction.client  # type: ignore[assignment]
    limits = await bot.services.jobs.limits(interaction.guild_id or 0)
    typed = current.strip().lower().replace("×", "x")
    sizes = [f"{w}x{h}" for w, h in limits.sizes()]
    return [app_commands.Choice(name=s, value=s) for s in sizes if typed in s][:MAX_SUGGESTIONS]
