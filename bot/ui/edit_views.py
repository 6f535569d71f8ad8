"""The 🪄 Edit button and its form, and the 1–4 buttons of a description. Like the other result
buttons they carry the job id in their custom_id, so they answer after a restart."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot import i18n
from bot.errors import AtelierError, InvalidRequest
from bot.services.edits import SourceImage
from bot.services.records import JobRecord
from bot.ui.messages import edit_mode
from bot.ui.replies import member_context, reply_refusal, request_from
from bot.ui.translator import locale_of
from bot.ui.views import JOB_ID, _AnswersErrors, _JobButton, announce, defer_quietly, submit_and_track

if TYPE_CHECKING:
    from bot.app import AtelierBot

log = logging.getLogger(__name__)

SourceLoader = Callable[[discord.Interaction], Awaitable[SourceImage]]


def edit_header(job: JobRecord, locale: str = i18n.DEFAULT_LOCALE) -> str:
    instruction = discord.utils.escape_markdown(job.member_prompt[:200])
    return i18n.text(locale, "edit.header", instruction=instruction, mode=edit_mode(job.plan or {}, locale))


def member_of(interaction: discord.Interaction) -> dict[str, object]:
    # The same refusal of direct messages as every other request (see bot.ui.replies.request_from).
    request_from(interaction, "-")
    return member_context(interaction)


async def submit_edit(
    bot: AtelierBot, interaction: discord.Interaction, instruction: str, source: SourceImage, **options: object
) -> None:
    """Shared by /edit, the 🪄 form and "Edit with Atelier"."""
    member = member_of(interaction)
    job = await bot.services.edits.submit_edit(instruction, source, **options, **member)  # type: ignore[arg-type]
    await announce(bot, interaction, job, edit_header(job, locale_of(interaction)))


async def submit_describe(bot: AtelierBot, interaction: discord.Interaction, source: SourceImage) -> None:
    member = member_of(interaction)
    job = await bot.services.edits.submit_describe(source, **member)  # type: ignore[arg-type]
    await announce(bot, interaction, job, i18n.text(locale_of(interaction), "edit.describe_header"))


class EditImageModal(discord.ui.Modal):
    """Asks for the instruction (and, on a grid, which image), then edits that image."""

    def __init__(
        self,
        custom_id: str,
        load_source: Callable[[discord.Interaction, int], Awaitable[SourceImage]],
        count: int = 1,
        *,
        locale: str = i18n.DEFAULT_LOCALE,
    ) -> None:
        super().__init__(title=i18n.text(locale, "edit.modal_title"), custom_id=custom_id)
        self.load_source = load_source
        self.count = count
        self.instruction: discord.ui.TextInput[EditImageModal] = discord.ui.TextInput(
            label=i18n.text(locale, "edit.instruction_label"),
            placeholder=i18n.text(locale, "edit.instruction_placeholder"),
            style=discord.TextStyle.paragraph,
            max_length=400,
            custom_id="instruction",
        )
        self.add_item(self.instruction)
        self.image_number: discord.ui.TextInput[EditImageModal] | None = None
        if count > 1:
            self.image_number = discord.ui.TextInput(
                label=i18n.text(locale, "edit.image_number_label", count=count),
                default="1",
                max_length=1,
                custom_id="image",
            )
            self.add_item(self.image_number)

    def index(self) -> int:
        if self.image_number is None:
            return 0
        value = self.image_number.value.strip()
        if not value.isdigit() or not 1 <= int(value) <= self.count:
            raise InvalidRequest("errors.bad_image_number", count=self.count)
        return int(value) - 1

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await defer_quietly(interaction)
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        source = await self.load_source(interaction, self.index())
        await submit_edit(bot, interaction, self.instruction.value, source)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        if isinstance(error, AtelierError):
            await reply_refusal(interaction, error)  # in the member's language, as from a command
            return
        await super().on_error(interaction, error)


class MagicEditButton(_JobButton, template=r"atelier:wand:" + JOB_ID):  # type: ignore[call-arg]
    """🪄: edit this result by instruction; the new job's parent is this one, so edits chain."""

    action = "wand"
    emoji = "🪄"

    async def run(self, interaction: discord.Interaction) -> None:
        job = await self.load_job(interaction)
        if not job.images:
            raise InvalidRequest("errors.image_gone")
        job_id = self.job_id

        async def load(submitted: discord.Interaction, index: int) -> SourceImage:
            bot: AtelierBot = submitted.client  # type: ignore[assignment]
            return await bot.services.edits.source_of(job_id, index)

        modal = EditImageModal(f"atelier:wand-modal:{job.id}", load, len(job.images), locale=locale_of(interaction))
        await interaction.response.send_modal(modal)


class DescribePromptButton(  # type: ignore[call-arg]
    _AnswersErrors,
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"atelier:prompt:" + JOB_ID + r":(?P<index>[0-3])",
):
    """1–4 under a description: /imagine with that prompt, exactly as shown."""

    def __init__(self, job_id: str, index: int) -> None:
        self.job_id = job_id
        self.index = index
        super().__init__(
            discord.ui.Button(
                label=str(index + 1),
                style=discord.ButtonStyle.primary,
                custom_id=f"atelier:prompt:{job_id}:{index}",
                row=1,  # their own row, under the result's other buttons
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> DescribePromptButton:
        return cls(match["job_id"], int(match["index"]))

    async def run(self, interaction: discord.Interaction) -> None:
        await defer_quietly(interaction)
        bot: AtelierBot = interaction.client  # type: ignore[assignment]
        description = await bot.services.edits.describe_job(self.job_id)
        request = request_from(interaction, description.prompts[self.index], raw=True, parent_job_id=self.job_id)
        await submit_and_track(bot, interaction, request)


def edit_buttons(job: JobRecord) -> list[discord.ui.Item[discord.ui.View]]:
    """The buttons this module adds to a result message."""
    if job.status != "succeeded":
        return []
    if job.kind == "describe":
        return [DescribePromptButton(job.id, index) for index in range(4)]
    return [MagicEditButton(job.id)] if job.images else []


EDIT_ITEMS = (MagicEditButton, DescribePromptButton)
