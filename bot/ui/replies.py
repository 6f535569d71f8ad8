"""Answering members: the one way a refusal or an error reaches them, and who asked, from where."""

from __future__ import annotations

import logging

import discord

from bot.errors import AtelierError, InvalidRequest
from bot.services.jobs import ImagineRequest
from bot.ui.translator import error_text, locale_of

log = logging.getLogger(__name__)


async def reply_error(interaction: discord.Interaction, message: str) -> None:
    """A short ephemeral message, whatever state the interaction is in."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True)
            return
        if interaction.type is discord.InteractionType.application_command:
            # A public "thinking…" placeholder would stay visible to everyone; remove it first.
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass
        await interaction.followup.send(message, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell a member: %s", message)


async def reply_refusal(interaction: discord.Interaction, error: AtelierError) -> None:
    """A refusal raised anywhere under a command or a button, in the member's language."""
    await reply_error(interaction, error_text(locale_of(interaction), error))


def member_context(interaction: discord.Interaction) -> dict[str, object]:
    """Who asked, where, with which roles: what quota and policy decisions depend on."""
    channel = interaction.channel
    user = interaction.user
    roles = tuple(role.id for role in getattr(user, "roles", ()))
    return {
        "guild_id": interaction.guild_id or 0,
        "user_id": user.id,
        "channel_id": interaction.channel_id,
        "channel_nsfw": bool(getattr(channel, "nsfw", False)),
        "role_ids": roles,
        "display_name": user.display_name,
        # Admins are told which rule refused a request (default_permissions aside, this is what they hold).
        "is_admin": bool(interaction.permissions.manage_guild or interaction.permissions.administrator),
    }


def request_from(interaction: discord.Interaction, prompt: str, **options: object) -> ImagineRequest:
    if interaction.guild_id is None:
        # Quotas, policy and ratings are per server: a direct message has none to charge or apply.
        raise InvalidRequest("errors.servers_only")
    return ImagineRequest(prompt=prompt, **member_context(interaction), **options)  # type: ignore[arg-type]
