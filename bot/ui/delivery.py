"""Posting an ended job: to the interaction while its token lives, else to the channel."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot.services.delivery import DEFAULT_UPLOAD_LIMIT, blur, fit_upload, grid
from bot.services.records import JobRecord
from bot.ui.messages import result_embed
from bot.ui.views import result_view

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)


async def deliver_job(bot: AtelierBot, job: JobRecord) -> None:
    pending = bot.pending_replies.pop(job.id, None)
    try:
        channel = bot.get_channel(job.channel_id) if job.channel_id else None
        action = await bot.delivery.flagged_action(job, channel_nsfw=bool(getattr(channel, "nsfw", False)))
        kwargs = await _message_for(job, upload_limit=_upload_limit(bot, job), action=action)
        message = None
        if pending is not None and pending.usable:
            message = await _send_followup(pending.interaction, job, kwargs)
        if message is None:
            channel = channel or await bot.fetch_channel(job.channel_id)  # type: ignore[arg-type]
            message = await channel.send(content=f"<@{job.user_id}> {kwargs.pop('content', '')}".strip(), **kwargs)  # type: ignore[union-attr]
    except Exception:
        log.exception("could not deliver job %s; will retry", job.id)
        if pending is not None:
            bot.pending_replies[job.id] = pending
        await bot.delivery.unclaim(job.id)
        return
    await bot.delivery.delivered(job.id, message.id)
    log.info("delivered job %s as message %s", job.id, message.id)


async def _send_followup(
    interaction: discord.Interaction, job: JobRecord, kwargs: dict[str, Any]
) -> discord.Message | None:
    try:
        message = await interaction.followup.send(wait=True, **kwargs)
    except (discord.NotFound, discord.Forbidden, discord.HTTPException) as error:
        if isinstance(error, discord.HTTPException) and error.status >= 500:
            raise
        log.info("interaction for job %s is gone (%s); posting to the channel", job.id, error.status)
        return None
    try:
        await interaction.delete_original_response()  # the "queued" placeholder
    except discord.HTTPException:
        pass
    return message


def _upload_limit(bot: AtelierBot, job: JobRecord) -> int:
    guild = bot.get_guild(job.guild_id)
    return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT


async def _read_images(job: JobRecord) -> list[bytes]:
    return await asyncio.to_thread(lambda: [Path(path).read_bytes() for path in job.image_paths])


async def _message_for(job: JobRecord, *, upload_limit: int, action: str = "show") -> dict[str, Any]:
    if job.status != "succeeded":
        reason = "was cancelled" if job.status == "cancelled" else f"failed: {job.error or 'unknown error'}"
        return {"content": f"Your image for “{job.member_prompt[:200]}” {reason}. Nothing was charged."}
    if action == "withhold":
        return {"content": f"Your image for “{job.member_prompt[:200]}” was withheld by this server's image filter."}
    pngs = await _read_images(job)
    # A single image goes out as the engine encoded it; only a grid or a blur is drawn anew.
    png = pngs[0] if len(pngs) == 1 else await asyncio.to_thread(grid, pngs)
    if action == "blur":
        png = await asyncio.to_thread(blur, png)
    attachment = await asyncio.to_thread(fit_upload, png, job.id, upload_limit)
    embed = result_embed(job)
    embed.set_image(url=f"attachment://{attachment.filename}")
    return {
        "embed": embed,
        "file": discord.File(io.BytesIO(attachment.data), filename=attachment.filename),
        "view": result_view(job),
    }
