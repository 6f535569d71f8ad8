"""Atelier in the member's language: the command tree's names and descriptions through discord.py's
``app_commands.Translator`` (sent to Discord as name/description localizations on sync), and every
reply through the message catalog (bot/i18n), picked by the interaction's locale."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import discord
from discord import app_commands

from bot import i18n
from bot.errors import AtelierError, Refused

log = logging.getLogger(__name__)

COMMANDS_DIR = Path(i18n.__file__).resolve().parent / "commands"
_Location = app_commands.TranslationContextLocation


@cache
def command_catalog(locale: str) -> dict[str, str]:
    """Localized command names and descriptions: ``"atelier quota set.description"``,
    ``"imagine.options.prompt.name"``, ``"choices.watercolor"``. English lives in the decorators."""
    path = COMMANDS_DIR / f"{locale}.toml"
    return i18n.load(path) if path.is_file() else {}


def command_key(context: app_commands.TranslationContextTypes) -> str | None:
    """Where a string of the command tree lives in the command catalog."""
    data = context.data
    match context.location:
        case _Location.command_name | _Location.group_name:
            return f"{data.qualified_name}.name"
        case _Location.command_description | _Location.group_description:
            return f"{data.qualified_name}.description"
        case _Location.parameter_name:
            return f"{data.command.qualified_name}.options.{data.name}.name"
        case _Location.parameter_description:
            return f"{data.command.qualified_name}.options.{data.name}.description"
        case _Location.choice_name:
            return f"choices.{data.value}"
    return None


class CatalogTranslator(app_commands.Translator):
    """Installed with ``tree.set_translator`` in setup_hook; Discord shows each member the names and
    descriptions of their own client language."""

    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        if locale.value not in i18n.LOCALES or locale.value == i18n.DEFAULT_LOCALE:
            return None  # only exact catalogs: zh-TW readers get the English default, not a guess
        key = command_key(context)
        return command_catalog(locale.value).get(key) if key else None


def locale_of(interaction: discord.Interaction) -> str:
    """The member's language where Atelier speaks it, else the server's, else English."""
    for candidate in (interaction.locale, interaction.guild_locale):
        if candidate is not None and i18n.speaks(candidate.value):
            return i18n.supported(candidate.value)
    return i18n.DEFAULT_LOCALE


def guild_locale(guild: discord.Guild | None) -> str:
    return i18n.supported(guild.preferred_locale.value) if guild is not None else i18n.DEFAULT_LOCALE


def say(interaction: discord.Interaction, key: str, /, **params: object) -> str:
    return i18n.text(locale_of(interaction), key, **params)


def relative_time(moment: datetime) -> str:
    """A Discord timestamp (``<t:UNIX:R>``): each member's client shows "in 3 hours" in their language."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # Atelier stores UTC
    return discord.utils.format_dt(aware, "R")


def error_text(locale: str, error: AtelierError) -> str:
    """A refusal in the member's language; a quota refusal says when asking again will work."""
    if not isinstance(error, Refused) or error.resets_at is None:
        return error.localized(locale)
    when = relative_time(error.resets_at)
    if error.key == "quota.cooldown":
        return i18n.text(locale, "quota.ready_again", when=when)  # the same line, with a live countdown
    return f"{error.localized(locale)} {i18n.text(locale, 'quota.resets', when=when)}"
