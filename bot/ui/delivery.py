"""Posting an ended job: to the interaction while its token lives, else to the channel."""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import i18n
from bot.errors import PolicyRefused
from bot.services.delivery import DEFAULT_UPLOAD_LIMIT, Attachment, blur, fit_upload, grid, mask_overlay
from bot.services.edits import failure_text
from bot.services.jobs import discard_preview
from bot.services.records import JobRecord
from bot.ui.messages import result_embed
from bot.ui.translator import guild_locale, locale_of
from bot.ui.views import result_view

if TYPE_CHECKING:
    from bot.app import AtelierBot, PendingReply

log = logging.getLogger(__name__)


async def deliver_job(bot: AtelierBot, job: JobRecord) -> None:
    """Post one ended job, claimed by the caller. Discord refusing it (a 4xx, a 5xx, a rate limit past
    discord.py's patience) backs off this job alone; see DeliveryService.unclaim."""
    pending = bot.pending_replies.pop(job.id, None)
    try:
        channel = bot.get_channel(job.channel_id) if job.channel_id else None
        channel_nsfw = bool(getattr(channel, "nsfw", False))
        # The requester's language while their interaction is known; after a restart, the server's.
        locale = locale_of(pending.interaction) if pending is not None else guild_locale(bot.get_guild(job.guild_id))
        if job.kind == "describe" and job.status == "succeeded":
            reply = await _describe_reply(bot, job, channel_nsfw, locale)
        else:
            action = await bot.delivery.flagged_action(job, channel_nsfw=channel_nsfw)
            reply = await _reply_for(job, upload_limit=_upload_limit(bot, job), action=action, locale=locale)
        message = None
        if pending is not None and pending.usable:
            message = await _send_followup(pending, job, reply)
        if message is None:
            channel = channel or await bot.fetch_channel(job.channel_id)  # type: ignore[arg-type]
            message = await channel.send(  # type: ignore[union-attr]
                **reply.message_kwargs(content_prefix=f"<@{job.user_id}>")
            )
    except Exception as error:
        state = await bot.delivery.unclaim(job.id, _describe(error))
        # Discord refusing is expected now and then; anything else is a bug worth its traceback.
        expected = isinstance(error, discord.DiscordException | OSError)
        log.warning("could not deliver job %s (%s); %s", job.id, _describe(error), state, exc_info=not expected)
        if pending is not None and state == "pending":
            bot.pending_replies[job.id] = pending
        return
    await bot.delivery.delivered(job.id, message.id)
    await asyncio.to_thread(discard_preview, bot.settings.images_dir, job.id)
    log.info("delivered job %s as message %s", job.id, message.id)


def _describe(error: BaseException) -> str:
    if isinstance(error, discord.HTTPException):
        return f"{error.status} {error.code}: {error.text[:200]}"
    return f"{type(error).__name__}: {error}"[:300]


async def _send_followup(pending: PendingReply, job: JobRecord, reply: Reply) -> discord.Message | None:
    """The result as a follow-up of the member's interaction; None where Discord no longer knows the
    interaction (the channel gets it instead). A 5xx or a rate limit is raised: the job backs off."""
    try:
        message = await pending.interaction.followup.send(wait=True, **reply.message_kwargs())
    except (discord.NotFound, discord.Forbidden) as error:
        log.info("interaction for job %s is gone (%s); posting to the channel", job.id, error.status)
        return None
    except discord.HTTPException as error:
        if error.status == 401:  # the token expired (Invalid Webhook Token)
            log.info("interaction token for job %s expired; posting to the channel", job.id)
            return None
        raise
    await pending.remove_status()  # the "queued" placeholder
    return message


@dataclass(frozen=True)
class Reply:
    """A result message as data: each send builds its own discord.File, so a retry (or the channel
    fallback after a failed follow-up) uploads the whole image again, never a consumed stream."""

    content: str = ""
    embed: discord.Embed | None = None
    attachment: Attachment | None = None
    view: discord.ui.View | None = None
    # Shown beside the main image (a repair's mask preview, as the embed's thumbnail).
    beside: Attachment | None = None

    def message_kwargs(self, *, content_prefix: str = "") -> dict[str, Any]:
        kwargs: dict[str, Any] = {"content": f"{content_prefix} {self.content}".strip()}
        if self.embed is not None:
            kwargs["embed"] = self.embed
        files = [a for a in (self.attachment, self.beside) if a is not None]
        if len(files) == 1:
            kwargs["file"] = discord.File(io.BytesIO(files[0].data), filename=files[0].filename)
        elif files:
            kwargs["files"] = [discord.File(io.BytesIO(a.data), filename=a.filename) for a in files]
        if self.view is not None:
            kwargs["view"] = self.view
        return kwargs


def _upload_limit(bot: AtelierBot, job: JobRecord) -> int:
    guild = bot.get_guild(job.guild_id)
    return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT


def _attachment(job: JobRecord, upload_limit: int, action: str) -> Attachment:
    """The result's one attachment, built on a worker thread in one go (reading, drawing, re-encoding)."""
    pngs = [Path(path).read_bytes() for path in job.image_paths]
    # A single image goes out as the engine encoded it; only a grid or a blur is drawn anew.
    png = pngs[0] if len(pngs) == 1 else grid(pngs)
    if action == "blur":
        png = blur(png)
    return fit_upload(png, job.id, upload_limit)


async def _reply_for(
    job: JobRecord, *, upload_limit: int, action: str = "show", locale: str = i18n.DEFAULT_LOCALE
) -> Reply:
    prompt = job.member_prompt[:200]
    if job.status != "succeeded":
        not_found = failure_text(job, locale)
        if not_found is not None:
            return Reply(content=not_found)
        if job.status == "cancelled":
            if job.error and job.error != "cancelled":
                return Reply(content=i18n.text(locale, "result.cancelled_because", prompt=prompt, reason=job.error))
            return Reply(content=i18n.text(locale, "result.cancelled", prompt=prompt))
        reason = (job.error or i18n.text(locale, "result.unknown_error"))[:300]
        return Reply(content=i18n.text(locale, "result.failed", prompt=prompt, reason=reason))
    if action == "withhold":
        return Reply(content=i18n.text(locale, "result.withheld", prompt=prompt))
    attachment = await asyncio.to_thread(_attachment, job, upload_limit, action)
    embed = result_embed(job, locale)
    embed.set_image(url=f"attachment://{attachment.filename}")
    beside = await _mask_preview(job) if action == "show" else None
    if beside is not None:
        embed.set_thumbnail(url=f"attachment://{beside.filename}")
    return Reply(embed=embed, attachment=attachment, view=result_view(job), beside=beside)


async def _mask_preview(job: JobRecord) -> Attachment | None:
    mask = (job.outcome or {}).get("mask")
    if job.kind != "repair" or not mask or not job.init_image:
        return None
    try:
        png = await asyncio.to_thread(mask_overlay, job.init_image, mask)
    except OSError:
        log.info("no mask preview for job %s: its files are gone", job.id)
        return None
    return Attachment(f"{job.id}-mask.png", png)


async def _describe_reply(bot: AtelierBot, job: JobRecord, channel_nsfw: bool, locale: str) -> Reply:
    """A description: its caption and four prompts (made and stored once), with buttons 1–4."""
    try:
        description = await bot.services.edits.describe(job, channel_nsfw=channel_nsfw)
    except PolicyRefused as refused:
        return Reply(content=refused.localized(locale))
    lines = [
        i18n.text(locale, "edit.describe_prompt", number=i + 1, prompt=prompt[:400])
        for i, prompt in enumerate(description.prompts)
    ]
    embed = discord.Embed(
        title=i18n.text(locale, "edit.describe_title"),
        description=f"*{discord.utils.escape_markdown(description.caption)}*\n\n" + "\n".join(lines),
        colour=discord.Colour.blurple(),
    )
    embed.set_footer(text=i18n.text(locale, "edit.describe_footer", job_id=job.id))
    return Reply(embed=embed, view=result_view(job))
