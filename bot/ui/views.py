"""The buttons on status and result messages. They carry the job id in their custom_id, so they work
after a restart (DynamicItem, registered by the results cog)."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import discord

from bot import i18n
from bot.errors import AtelierError, PolicyRefused
from bot.services.explain import provenance
from bot.services.jobs import ImagineRequest
from bot.services.records import JobRecord
from bot.ui.messages import explain_embed, info_message
from bot.ui.replies import member_context, reply_refusal, request_from
from bot.ui.translator import locale_of, say

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)

JOB_ID = r"(?P<job_id>[0-9a-f]{32})"
# An interaction's follow-ups work for 15 minutes; the heatmaps are a few seconds of GPU once an engine
# takes the job, and past this the member is told to try again rather than left waiting.
EXPLAIN_WAIT_SECONDS = 300.0


async def submit_and_track(bot: AtelierBot, interaction: discord.Interaction, request: ImagineRequest) -> None:
    """Shared by /imagine and the result buttons: one place decides how a queued job is announced.
    A refusal (AtelierError) propagates to the caller's error handler, which tells the member."""
    job = await bot.services.jobs.submit(request)
    shown = job.model_prompt if job.model_prompt != job.member_prompt else job.member_prompt
    header = (
        f"**{discord.utils.escape_markdown(job.member_prompt[:200])}**\n-# {discord.utils.escape_markdown(shown[:300])}"
    )
    await announce(bot, interaction, job, header)


async def announce(bot: AtelierBot, interaction: discord.Interaction, job: JobRecord, header: str) -> None:
    """Show a queued job's status where the member asked for it, and remember who to answer."""
    status_message = None
    queued = f"{header}\n{say(interaction, 'progress.queued')}"
    view = status_view(job.id, locale_of(interaction))
    try:
        if interaction.type is discord.InteractionType.application_command:
            await interaction.edit_original_response(content=queued, view=view)
        else:
            # A button or modal was answered with a silent defer (see defer_quietly): the status is a
            # public follow-up of its own, and the clicked message stays as it was.
            status_message = await interaction.followup.send(queued, view=view, wait=True)
    except discord.HTTPException:
        log.info("could not show the queued status of job %s", job.id)
    bot.track(job.id, interaction, header, status_message)


async def defer_quietly(interaction: discord.Interaction) -> None:
    """Answer a button or modal within Discord's 3 seconds without a public "thinking…" placeholder.
    After a public placeholder, Discord turns the first follow-up into an edit of it and ignores
    ``ephemeral``, so a refusal ("Daily limit reached") would be shown to the whole channel."""
    await interaction.response.defer()


def status_view(job_id: str, locale: str = i18n.DEFAULT_LOCALE) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, label=i18n.text(locale, "buttons.cancel")))
    return view


def result_view(job: JobRecord) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if job.status == "succeeded":
        for index in range(len(job.images)):
            view.add_item(UpscaleButton(job.id, index))
        for index in range(len(job.images)):
            view.add_item(VariationButton(job.id, index))
    if job.kind not in ("edit", "repair", "describe"):
        # An edit's words are an instruction, not a prompt to draw again: 🪄 edits it further instead.
        view.add_item(RerollButton(job.id))
        view.add_item(EditPromptButton(job.id))
    view.add_item(InfoButton(job.id))
    if job.status == "succeeded" and job.kind == "txt2img":
        view.add_item(ExplainButton(job.id))
    view.add_item(DeleteButton(job.id))
    # Imported here: bot.ui.edit_views builds on this module's buttons.
    from bot.ui.edit_views import edit_buttons

    for item in edit_buttons(job):
        view.add_item(item)
    return view


def rerun_request(interaction: discord.Interaction, job: JobRecord, prompt: str) -> ImagineRequest:
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


class _AnswersErrors:
    """Button callbacks run outside the command tree, so its error handler never sees them: a refusal
    raised here is told to the member the same way."""

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await self.run(interaction)
        except AtelierError as error:
            interaction.client.metrics.refused(error)  # type: ignore[attr-defined]
            await reply_refusal(interaction, error)

    async def run(self, interaction: discord.Interaction) -> None:
        raise NotImplementedError


class _JobButton(_AnswersErrors, discord.ui.DynamicItem[discord.ui.Button], template=r"atelier:base:" + JOB_ID):  # type: ignore[call-arg]
    """Base of every button that acts on a job; subclasses set ``action`` and ``template``."""

    action = "base"
    label: str = ""
    emoji: str | None = None
    style = discord.ButtonStyle.secondary

    def __init__(self, job_id: str, *, label: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(
            discord.ui.Button(
                label=label or self.label or None,
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

    async def load_job(self, interaction: discord.Interaction) -> JobRecord:
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        return await bot.services.jobs.get(self.job_id)


class RerollButton(_JobButton, template=r"atelier:reroll:" + JOB_ID):  # type: ignore[call-arg]
    action = "reroll"
    emoji = "🔄"

    async def run(self, interaction: discord.Interaction) -> None:
        await defer_quietly(interaction)
        job = await self.load_job(interaction)
        # The clicker starts (and pays for) their own job with the original request and a new seed.
        await submit_and_track(interaction.client, interaction, rerun_request(interaction, job, job.member_prompt))  # type: ignore[arg-type]


class InfoButton(_JobButton, template=r"atelier:info:" + JOB_ID):  # type: ignore[call-arg]
    action = "info"
    emoji = "ℹ️"

    async def run(self, interaction: discord.Interaction) -> None:
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        job = await bot.services.jobs.visible_to(
            self.job_id, guild_id=interaction.guild_id, user_id=interaction.user.id
        )
        lineage = await bot.services.jobs.lineage(job.id)
        await interaction.response.send_message(**info_message(job, locale_of(interaction), lineage), ephemeral=True)


class ExplainButton(_JobButton, template=r"atelier:explain:" + JOB_ID):  # type: ignore[call-arg]
    """🔍: why the grid's best image looks as it does, privately to whoever asks. The words and the run
    come at once; the heatmaps follow when an engine has re-run the image (once per image, shared)."""

    action = "explain"
    emoji = "🔍"

    async def run(self, interaction: discord.Interaction) -> None:
        # Private from the first byte: a public "thinking…" would turn the answer into a public edit.
        await interaction.response.defer(ephemeral=True, thinking=True)
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        job = await self.load_job(interaction)
        summary = provenance(job, 0)
        locale = locale_of(interaction)
        explanation = await bot.services.jobs.explain(job.id, 0)
        await interaction.followup.send(
            embed=explain_embed(summary, locale=locale),
            content=say(interaction, "quality.explain_working"),
            ephemeral=True,
        )
        try:
            done = await bot.services.jobs.wait(explanation.id, timeout=EXPLAIN_WAIT_SECONDS)
        except TimeoutError:
            await interaction.followup.send(say(interaction, "quality.explain_timed_out"), ephemeral=True)
            return
        if done.status != "succeeded" or not done.images:
            reason = (done.error or done.status)[:200]
            await interaction.followup.send(say(interaction, "quality.explain_failed", reason=reason), ephemeral=True)
            return
        words = (done.explanation or {}).get("words", [])
        await interaction.followup.send(
            content=say(interaction, "quality.explain_heatmap_note"),
            embed=explain_embed(summary, words, locale),
            file=discord.File(done.images[0].path, filename=f"explain-{job.id}.png"),
            ephemeral=True,
        )


class CancelButton(_JobButton, template=r"atelier:cancel:" + JOB_ID):  # type: ignore[call-arg]
    action = "cancel"
    label = "Cancel"
    style = discord.ButtonStyle.danger

    async def run(self, interaction: discord.Interaction) -> None:
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        status = await bot.services.jobs.cancel(self.job_id, user_id=interaction.user.id)
        key = {"cancelled": "cancel.cancelled", "cancelling": "cancel.cancelling", "missing": "cancel.missing"}
        await interaction.response.send_message(say(interaction, key.get(status, "cancel.finished")), ephemeral=True)


class _ImageButton(  # type: ignore[call-arg]
    _AnswersErrors,
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"atelier:img:" + JOB_ID + r":(?P<index>[0-3])",
):
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

    async def run(self, interaction: discord.Interaction) -> None:
        await defer_quietly(interaction)
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        request = await bot.services.jobs.derived_request(
            self.job_id, self.index, self.kind, **member_context(interaction)
        )
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
    def __init__(self, job: JobRecord, locale: str = i18n.DEFAULT_LOCALE) -> None:
        super().__init__(title=i18n.text(locale, "modal.edit_title"), custom_id=f"atelier:edit-modal:{job.id}")
        self.job = job
        self.prompt: discord.ui.TextInput[EditPromptModal] = discord.ui.TextInput(
            label=i18n.text(locale, "modal.prompt"),
            style=discord.TextStyle.paragraph,
            default=job.member_prompt,
            max_length=1000,
            custom_id="prompt",
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await defer_quietly(interaction)
        request = rerun_request(interaction, self.job, self.prompt.value)
        await submit_and_track(interaction.client, interaction, request)  # type: ignore[arg-type]

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        if isinstance(error, AtelierError):
            interaction.client.metrics.refused(error)  # type: ignore[attr-defined]
            await reply_refusal(interaction, error)
            return
        await super().on_error(interaction, error)


class EditPromptButton(_JobButton, template=r"atelier:edit:" + JOB_ID):  # type: ignore[call-arg]
    action = "edit"
    emoji = "✏️"

    async def run(self, interaction: discord.Interaction) -> None:
        job = await self.load_job(interaction)
        await interaction.response.send_modal(EditPromptModal(job, locale_of(interaction)))


def may_delete(job: JobRecord, user_id: int, permissions: discord.Permissions) -> bool:
    """The member who asked, or a moderator of the channel (Manage Messages)."""
    return job.user_id == user_id or permissions.manage_messages or permissions.administrator


class DeleteButton(_JobButton, template=r"atelier:delete:" + JOB_ID):  # type: ignore[call-arg]
    action = "delete"
    emoji = "🗑️"

    async def run(self, interaction: discord.Interaction) -> None:
        job = await self.load_job(interaction)
        if not may_delete(job, interaction.user.id, interaction.permissions):
            raise PolicyRefused("errors.delete_not_yours")
        await defer_quietly(interaction)
        if interaction.message is not None:
            try:
                await interaction.message.delete()
            except discord.NotFound:
                pass  # someone else deleted it first: the member's wish is met
        log.info("result of job %s deleted by %s", job.id, interaction.user.id)


DYNAMIC_ITEMS = (
    RerollButton,
    InfoButton,
    CancelButton,
    UpscaleButton,
    VariationButton,
    EditPromptButton,
    DeleteButton,
    ExplainButton,
)
