"""/edit and /describe as jobs: the same screening, quota, queue and delivery as /imagine.

An edit is screened (ban, options, moderation of the instruction, quota) before any model runs, then
planned (bot/services/edit_plans.py), then submitted as an instruction edit or a region repair. A
description is a captioning job; once its caption is back it is moderated and turned into four prompts
in Atelier's styles, which are stored with the job so that its buttons work after a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import update

from bot import i18n
from bot.config import Settings
from bot.db.models import Guild, Job
from bot.errors import InvalidRequest, NotFound, PolicyRefused
from bot.services.edit_plans import MAX_INSTRUCTION_CHARS, REPAIR, decide
from bot.services.jobs import ImagineRequest, JobService
from bot.services.records import JobRecord
from engine.config import TINY_MODEL
from engine.contract import TARGET_NOT_FOUND, JobKind, JobStatus
from engine.queue import ledger
from engine.queue.database import Database

log = logging.getLogger(__name__)

DEFAULT_EDIT_STEPS = 20
TINY_EDIT_STEPS = 2
# Recolouring keeps the object's shape: the inpainting model starts from the source, not from noise.
RECOLOR_STRENGTH = 0.8
DESCRIBE_PROMPT = "Describe this image"
# The four prompts of a description, one per style: distinct by construction, each in Atelier's voice.
DESCRIBE_STYLES = ("photographic", "cinematic", "watercolor", "anime")
MAX_CAPTION_CHARS = 300


def not_found_target(job: JobRecord) -> str | None:
    """The target a failed repair could not find, or None when it failed for another reason."""
    prefix = f"{TARGET_NOT_FOUND}: "
    if job.status == JobStatus.FAILED and job.error and job.error.startswith(prefix):
        return job.error.removeprefix(prefix)
    return None


def failure_text(job: JobRecord, locale: str | None = None) -> str | None:
    """What a member or the command line is told about a repair whose target was not there."""
    target = not_found_target(job)
    return i18n.text(locale, "errors.target_not_found", target=target[:80]) if target is not None else None


@dataclass(frozen=True)
class SourceImage:
    """An image to edit or describe: a checked upload, or an image of an earlier job."""

    path: str
    width: int
    height: int
    parent_job_id: str | None = None


@dataclass(frozen=True)
class Description:
    job_id: str
    caption: str
    prompts: list[str]


class EditService:
    def __init__(self, settings: Settings, database: Database, jobs: JobService) -> None:
        self.settings = settings
        self.db = database
        self.jobs = jobs

    def edit_steps(self, model: str) -> int:
        if self.settings.edit_steps is not None:
            return self.settings.edit_steps
        return TINY_EDIT_STEPS if model == TINY_MODEL else DEFAULT_EDIT_STEPS

    def image_guidance(self, strength: float | None) -> float:
        """The member's strength as InstructPix2Pix's image guidance: 0.5 is the server's setting, 1
        follows the instruction with the least regard for the source (guidance 1), lower keeps more."""
        base = self.settings.edit_image_guidance
        if strength is None:
            return base
        return round(1.0 + (base - 1.0) * 2.0 * (1.0 - strength), 4)

    def mask_settings(self) -> dict[str, Any]:
        return {
            "threshold": self.settings.mask_threshold,
            "dilate_px": self.settings.mask_dilate_px,
            "feather_px": self.settings.mask_feather_px,
        }

    async def submit_edit(
        self,
        instruction: str,
        source: SourceImage,
        *,
        strength: float | None = None,
        seed: int | None = None,
        **member: Any,
    ) -> JobRecord:
        instruction = " ".join(instruction.split())
        if not instruction:
            raise InvalidRequest("errors.instruction_empty")
        if len(instruction) > MAX_INSTRUCTION_CHARS:
            raise InvalidRequest("errors.instruction_too_long", length=len(instruction), limit=MAX_INSTRUCTION_CHARS)
        model = self.settings.image_model
        request = ImagineRequest(
            prompt=instruction,
            kind=JobKind.EDIT,
            init_image=source.path,
            width=source.width,
            height=source.height,
            parent_job_id=source.parent_job_id,
            count=1,
            steps=self.edit_steps(model),
            guidance=self.settings.edit_guidance,
            seed=seed,
            strength=strength,
            raw=True,
            model_prompt=instruction,
            expansion_source="instruction",
            plan={"mode": "instruction", "image_guidance": self.image_guidance(strength)},
            **member,
        )
        # Refusals first: no LLM time for a request that a ban, moderation or the quota refuses.
        guild, resolved = await self.jobs.screen(request)
        request = replace(request, seed=resolved.spec.seed)
        use_llm = not (guild is not None and guild.expansion_mode in ("presets", "raw"))
        chat = getattr(self.jobs.expander, "chat", None) if use_llm else None
        decision = await decide(instruction, chat=chat, seed=resolved.spec.seed)
        if decision.mode == REPAIR and decision.plan is not None:
            plan = decision.plan
            request = replace(
                request,
                kind=JobKind.REPAIR,
                model_prompt=plan.inpaint_prompt(),
                negative=plan.inpaint_negative() or None,
                strength=strength if strength is not None else (RECOLOR_STRENGTH if plan.action == "recolor" else None),
                expansion_source=f"plan-{decision.source}",
                plan={**decision.as_dict(), "mask": self.mask_settings()},
            )
        else:
            request = replace(request, plan={**request.plan, "source": decision.source})  # type: ignore[dict-item]
        job = await self.jobs.submit(request)
        log.info("edit %s of %s: %s", job.id, source.parent_job_id or "an upload", decision.as_dict())
        return job

    async def source_of(self, job_id: str, index: int = 0) -> SourceImage:
        """One image of a finished job, to edit again (edits chain: the new job's parent is that job)."""
        parent = await self.jobs.get(job_id)
        if parent.status != JobStatus.SUCCEEDED or not 0 <= index < len(parent.images):
            raise InvalidRequest("errors.image_gone")
        image = parent.images[index]
        return SourceImage(image.path, image.width, image.height, parent.id)

    async def submit_describe(self, source: SourceImage, **member: Any) -> JobRecord:
        request = ImagineRequest(
            prompt=DESCRIBE_PROMPT,
            kind=JobKind.DESCRIBE,
            init_image=source.path,
            width=source.width,
            height=source.height,
            parent_job_id=source.parent_job_id,
            count=1,
            steps=1,
            guidance=0.0,
            raw=True,
            model_prompt=DESCRIBE_PROMPT,
            expansion_source="describe",
            **member,
        )
        return await self.jobs.submit(request)

    async def describe(self, job: JobRecord, *, channel_nsfw: bool = False) -> Description:
        """The caption of a finished description and its four prompts, made once and stored. A caption
        that moderation refuses ends here, refunded: no prompts are made from it."""
        if job.kind != JobKind.DESCRIBE or job.status != JobStatus.SUCCEEDED:
            raise NotFound("errors.not_a_description", job_id=job.id)
        outcome = dict(job.outcome or {})
        caption = " ".join(str(outcome.get("caption") or "").split())[:MAX_CAPTION_CHARS] or "an image"
        if outcome.get("prompts"):
            return Description(job.id, caption, list(outcome["prompts"]))
        screening = ImagineRequest(
            prompt=caption,
            guild_id=job.guild_id,
            user_id=job.user_id,
            channel_id=job.channel_id,
            channel_nsfw=channel_nsfw,
        )
        try:
            await self.jobs.check_text(screening, caption)
        except PolicyRefused:
            async with self.db.transaction() as session:
                await ledger.refund(session, [job.id])
            raise PolicyRefused("errors.describe_refused") from None
        async with self.db.sessions() as session:
            guild = await session.get(Guild, job.guild_id)
        # A server that chose the presets gets them even where the host runs the LLM.
        use_llm = not (guild is not None and guild.expansion_mode in ("presets", "raw"))
        prompts: list[str] = []
        for offset, style in enumerate(DESCRIBE_STYLES):
            expansion = await self.jobs.expander.expand(caption, style=style, seed=job.seed + offset, use_llm=use_llm)
            prompt = expansion.model_prompt
            if prompt in prompts:  # the presets never repeat; an LLM might
                prompt = f"{prompt}, {style}"
            prompts.append(prompt)
        async with self.db.transaction() as session:
            await session.execute(
                update(Job).where(Job.id == job.id).values(outcome={**outcome, "caption": caption, "prompts": prompts})
            )
        return Description(job.id, caption, prompts)

    async def describe_job(self, job_id: str, *, channel_nsfw: bool = False) -> Description:
        return await self.describe(await self.jobs.get(job_id), channel_nsfw=channel_nsfw)
