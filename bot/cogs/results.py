"""Posting finished jobs, and the buttons on them. Buttons carry the job id, so they survive restarts."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.cogs.common import reply_error, request_from
from bot.db.models import Job
from bot.errors import AtelierError
from bot.services.delivery import DEFAULT_UPLOAD_LIMIT, blur, fit_upload, flagged_action, grid
from bot.services.jobs import ImagineRequest

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)

JOB_ID = r"(?P<job_id>[0-9a-f]{32})"


def result_embed(job: Job) -> discord.Embed:
    embed = discord.Embed(title=job.prompt[:256], colour=discord.Colour.blurple())
    if job.expanded_prompt != job.prompt:
        embed.add_field(
            name=f"Expanded prompt ({job.expansion_source})", value=job.expanded_prompt[:1024], inline=False
        )
    if job.negative_prompt:
        embed.add_field(name="Negative", value=job.negative_prompt[:1024], inline=False)
    embed.add_field(name="Seed", value=str(job.seed))
    embed.add_field(name="Model", value=job.model)
    embed.add_field(name="Size", value=f"{job.width}×{job.height}, {job.steps} steps")
    embed.set_footer(text=f"job {job.id}")
    return embed


def status_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if job.status == "succeeded":
        for index in range(len(job.images)):
            view.add_item(UpscaleButton(job.id, index))
        for index in range(len(job.images)):
            view.add_item(VariationButton(job.id, index))
    view.add_item(RerollButton(job.id))
    view.add_item(EditPromptButton(job.id))
    view.add_item(InfoButton(job.id))
    return view


def rerun_request(interaction: discord.Interaction, job: Job, prompt: str) -> ImagineRequest:
    """A job's request again, for whoever clicked: same options, a fresh seed, possibly a new prompt."""
    return request_from(
        interaction,
        prompt,
        negative=job.negative_prompt or None,
        width=job.width,
        height=job.height,
        steps=job.steps,
        style=job.style,
        raw=job.expansion_source == "raw",
        count=job.count,
        parent_job_id=job.id,
    )


async def _read_images(job: Job) -> list[bytes]:
    return await asyncio.to_thread(lambda: [Path(image.path).read_bytes() for image in job.images])


async def deliver_job(bot: AtelierBot, job: Job) -> None:
    """Post one ended job: to the interaction while its token lives, else to the channel."""
    pending = bot.pending_replies.pop(job.id, None)
    try:
        kwargs = await _message_for(job, upload_limit=_upload_limit(bot, job), action=await _flagged_action(bot, job))
        message = None
        if pending is not None and pending.usable:
            message = await _send_followup(pending.interaction, job, kwargs)
        if message is None:
            channel = bot.get_channel(job.channel_id) or await bot.fetch_channel(job.channel_id)  # type: ignore[arg-type]
            message = await channel.send(content=f"<@{job.user_id}> {kwargs.pop('content', '')}".strip(), **kwargs)  # type: ignore[union-attr]
    except Exception:
        log.exception("could not deliver job %s; will retry", job.id)
        if pending is not None:
            bot.pending_replies[job.id] = pending
        await bot.delivery.unclaim(job.id)
        return
    await bot.delivery.delivered(job.id, message.id)
    log.info("delivered job %s as message %s", job.id, message.id)


async def _send_followup(interaction: discord.Interaction, job: Job, kwargs: dict[str, Any]) -> discord.Message | None:
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


async def _flagged_action(bot: AtelierBot, job: Job) -> str:
    guild = await bot.services.jobs.guild(job.guild_id)
    channel = bot.get_channel(job.channel_id) if job.channel_id else None
    return flagged_action(
        job,
        threshold=bot.settings.safety_threshold,
        guild_allows_nsfw=bool(guild and guild.nsfw_policy == "allow"),
        channel_nsfw=bool(getattr(channel, "nsfw", False)),
        action=guild.flagged_images if guild else "blur",
    )


def _upload_limit(bot: AtelierBot, job: Job) -> int:
    guild = bot.get_guild(job.guild_id)
    return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT


async def _message_for(job: Job, *, upload_limit: int, action: str = "show") -> dict[str, Any]:
    if job.status != "succeeded":
        reason = "was cancelled" if job.status == "cancelled" else f"failed: {job.error or 'unknown error'}"
        return {"content": f"Your image for “{job.prompt[:200]}” {reason}. Nothing was charged."}
    pngs = await _read_images(job)
    png = pngs[0] if len(pngs) == 1 else await asyncio.to_thread(grid, pngs)
    if action == "withhold":
        return {"content": f"Your image for “{job.prompt[:200]}” was withheld by this server's image filter."}
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


class _JobButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:base:" + JOB_ID):  # type: ignore[call-arg]
    """Base of every button that acts on a job; subclasses set ``action`` and ``template``."""

    action = "base"
    label: str = ""
    emoji: str | None = None
    style = discord.ButtonStyle.secondary

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            discord.ui.Button(
                label=self.label or None,
                emoji=self.emoji,
                style=self.style,
                custom_id=f"atelier:{self.action}:{job_id}",
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> _JobButton:
        return cls(match["job_id"])

    async def load_job(self, interaction: discord.Interaction) -> Job | None:
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        try:
            return await bot.services.jobs.get(self.job_id)
        except AtelierError as error:
            await reply_error(interaction, str(error))
            return None


class RerollButton(_JobButton, template=r"atelier:reroll:" + JOB_ID):  # type: ignore[call-arg]
    action = "reroll"
    emoji = "🔄"

    async def callback(self, interaction: discord.Interaction) -> None:
        from bot.cogs.imagine import submit_and_track

        await interaction.response.defer(thinking=True)
        job = await self.load_job(interaction)
        if job is None:
            return
        # The clicker starts (and pays for) their own job with the original request and a new seed.
        await submit_and_track(interaction.client, interaction, rerun_request(interaction, job, job.prompt))  # type: ignore[arg-type]


class InfoButton(_JobButton, template=r"atelier:info:" + JOB_ID):  # type: ignore[call-arg]
    action = "info"
    emoji = "ℹ️"

    async def callback(self, interaction: discord.Interaction) -> None:
        job = await self.load_job(interaction)
        if job is None:
            return
        await interaction.response.send_message(
            f"```json\n{json.dumps(job_parameters(job), indent=1)}\n```", ephemeral=True
        )


class CancelButton(_JobButton, template=r"atelier:cancel:" + JOB_ID):  # type: ignore[call-arg]
    action = "cancel"
    label = "Cancel"
    style = discord.ButtonStyle.danger

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        try:
            status = await bot.services.jobs.cancel(self.job_id, user_id=interaction.user.id)
        except AtelierError as error:
            await reply_error(interaction, str(error))
            return
        await interaction.response.send_message(f"Job {status}.", ephemeral=True)


class _ImageButton(discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:img:" + JOB_ID + r":(?P<index>[0-3])"):  # type: ignore[call-arg]
    """Acts on one image of a grid: U1–U4 upscale, V1–V4 variations."""

    action = "img"
    prefix = ""
    kind = ""

    def __init__(self, job_id: str, index: int) -> None:
        self.job_id = job_id
        self.index = index
        super().__init__(
            discord.ui.Button(
                label=f"{self.prefix}{index + 1}",
                style=discord.ButtonStyle.secondary,
                custom_id=f"atelier:{self.action}:{job_id}:{index}",
                row=0 if self.prefix == "U" else 1,
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> _ImageButton:
        return cls(match["job_id"], int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        from bot.cogs.common import member_context
        from bot.cogs.imagine import submit_and_track

        await interaction.response.defer(thinking=True)
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        try:
            request = await bot.services.jobs.derived_request(
                self.job_id, self.index, self.kind, **member_context(interaction)
            )
        except AtelierError as error:
            await reply_error(interaction, str(error))
            return
        await submit_and_track(bot, interaction, request)


class UpscaleButton(_ImageButton, template=r"atelier:upscale:" + JOB_ID + r":(?P<index>[0-3])"):  # type: ignore[call-arg]
    action = "upscale"
    prefix = "U"
    kind = "upscale"


class VariationButton(_ImageButton, template=r"atelier:vary:" + JOB_ID + r":(?P<index>[0-3])"):  # type: ignore[call-arg]
    action = "vary"
    prefix = "V"
    kind = "img2img"


class EditPromptModal(discord.ui.Modal, title="Edit prompt"):
    def __init__(self, job: Job) -> None:
        super().__init__(custom_id=f"atelier:edit-modal:{job.id}")
        self.job = job
        self.prompt: discord.ui.TextInput[EditPromptModal] = discord.ui.TextInput(
            label="Prompt", style=discord.TextStyle.paragraph, default=job.prompt, max_length=1000, custom_id="prompt"
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        from bot.cogs.imagine import submit_and_track

        await interaction.response.defer(thinking=True)
        request = rerun_request(interaction, self.job, self.prompt.value)
        await submit_and_track(interaction.client, interaction, request)  # type: ignore[arg-type]


class EditPromptButton(_JobButton, template=r"atelier:edit:" + JOB_ID):  # type: ignore[call-arg]
    action = "edit"
    emoji = "✏️"

    async def callback(self, interaction: discord.Interaction) -> None:
        job = await self.load_job(interaction)
        if job is not None:
            await interaction.response.send_modal(EditPromptModal(job))


def job_parameters(job: Job) -> dict[str, Any]:
    """Everything needed to reproduce a result."""
    return {
        "prompt": job.prompt,
        "expanded_prompt": job.expanded_prompt,
        "negative_prompt": job.negative_prompt,
        "style": job.style,
        "seed": job.seed,
        "width": job.width,
        "height": job.height,
        "steps": job.steps,
        "guidance": job.guidance,
        "model": job.model,
        "count": job.count,
        "expansion": job.expansion_source,
        "kind": job.kind,
        "strength": job.strength,
        "parent_job_id": job.parent_job_id,
    }


class ResultsCog(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot


async def setup(bot: AtelierBot) -> None:
    bot.add_dynamic_items(RerollButton, InfoButton, CancelButton, UpscaleButton, VariationButton, EditPromptButton)
    await bot.add_cog(ResultsCog(bot))
