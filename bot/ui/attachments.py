"""A member's image attachment, checked and stored for an edit or a description."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord

from bot.errors import InvalidRequest
from bot.services.delivery import DEFAULT_UPLOAD_LIMIT
from bot.services.edits import SourceImage
from bot.services.uploads import save_source_image

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)


def upload_limit(interaction: discord.Interaction) -> int:
    return interaction.guild.filesize_limit if interaction.guild else DEFAULT_UPLOAD_LIMIT


def check_attachment(interaction: discord.Interaction, attachment: discord.Attachment) -> None:
    """What can be refused before anything is downloaded: the declared size and type."""
    limit = upload_limit(interaction)
    if attachment.size > limit:
        raise InvalidRequest("errors.upload_too_large", size=attachment.size / 2**20, limit=limit / 2**20)
    if attachment.content_type and not attachment.content_type.startswith("image/"):
        raise InvalidRequest("errors.upload_format")


def image_of(message: discord.Message) -> discord.Attachment:
    """The first image attached to a message (an Atelier result, or a member's post)."""
    for attachment in message.attachments:
        if (attachment.content_type or "").startswith("image/") or attachment.filename.lower().endswith(
            (".png", ".jpg", ".jpeg", ".webp")
        ):
            return attachment
    raise InvalidRequest("errors.no_image_attached")


async def source_from(bot: AtelierBot, interaction: discord.Interaction, attachment: discord.Attachment) -> SourceImage:
    """Download and check an attachment (format, pixels, decompression bombs, EXIF orientation) and
    store it as the job's source."""
    check_attachment(interaction, attachment)
    try:
        data = await attachment.read()
    except discord.HTTPException as error:
        raise InvalidRequest("errors.attachment_unreadable") from error
    path, width, height = await asyncio.to_thread(
        save_source_image, data, bot.settings, byte_limit=upload_limit(interaction)
    )
    return SourceImage(str(path), width, height)
