"""Submitting, following and cancelling jobs: the one path used by the bot's commands and the CLI."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot import i18n
from bot.config import Settings
from bot.db.models import Guild, Job, Member, ModerationEvent, Usage
from bot.errors import InvalidRequest, NotFound, PolicyRefused, Unavailable
from bot.services.bandit import VariantBandit, expansion_options
from bot.services.expansion import Expansion
from bot.services.expansion.translation import UnsupportedLanguage
from bot.services.inline import parse_aspect, parse_inline, size_for_aspect
from bot.services.metrics import BotMetrics
from bot.services.models import profile_for
from bot.services.moderation import check_prompt
from bot.services.quota import QuotaService
from bot.services.records import JobRecord
from engine.contract import (
    EDIT_KINDS,
    SEED_LIMIT,
    JobKind,
    JobQueue,
    JobSpec,
    JobStatus,
    QueuedJob,
    utcnow,
)
from engine.queue import ledger
from engine.queue.database import Database

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 1000
ENGINE_CHECK_SECONDS = 5.0
# The wait estimate averages the compute time of this many of the last finished jobs.
RECENT_COSTS = 50
MAX_COUNT = 4
MIN_SIDE = 64
MAX_BEST_OF = 8


class Expander(Protocol):
    async def expand(
        self,
        prompt: str,
        *,
        style: str | None = None,
        seed: int = 0,
        raw: bool = False,
        negative: str | None = None,
        use_llm: bool = True,
        max_details: int | None = None,
    ): ...  # returns bot.services.expansion.Expansion


@dataclass
class ImagineRequest:
    prompt: str
    guild_id: int = 0
    user_id: int = 0
    channel_id: int | None = None
    channel_nsfw: bool = False
    role_ids: tuple[int, ...] = ()
    display_name: str = ""
    negative: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    style: str | None = None
    raw: bool = False
    count: int | None = None
    model: str | None = None
    kind: str = JobKind.TEXT_TO_IMAGE
    parent_job_id: str | None = None
    init_image: str | None = None
    strength: float | None = None
    # Set for jobs derived from another (variation, upscale): the parent's model prompt, used as is.
    model_prompt: str | None = None
    # Candidates per requested image (the scorer keeps the best); None: the server's best_of.
    best_of: int | None = None
    # Members with Manage Server are told which moderation rule refused a request.
    is_admin: bool = False
    # Edits, repairs and descriptions: their plan, guidance and where their model prompt came from.
    plan: dict[str, Any] | None = None
    guidance: float | None = None
    expansion_source: str | None = None


@dataclass(frozen=True)
class Resolved:
    spec: JobSpec
    style: str | None
    raw: bool
    # Whether the member, their /settings or the server chose how to expand (raw, presets): if not,
    # a server that learns variants lets its bandit choose.
    expansion_chosen: bool = False
    # The guild's and the member's rows were there when the request was screened: submit need not
    # write them.
    on_record: bool = False


@dataclass(frozen=True)
class Limits:
    """What a request may ask for on one server with one model: the model's range within the host's and
    the server's limits. /imagine's suggestions and validate() both read it."""

    max_side: int
    max_steps: int
    default_steps: int
    side: int  # the model's native side
    multiple: int
    default_style: str | None = None

    def sizes(self) -> list[tuple[int, int]]:
        """Common shapes at the model's native size, within the server's limit."""
        shapes = [(1, 1), (3, 2), (2, 3), (16, 9), (9, 16)]
        found = []
        for aspect in shapes:
            width, height = size_for_aspect(aspect, self.side, self.multiple, MIN_SIDE)
            if max(width, height) <= self.max_side and (width, height) not in found:
                found.append((width, height))
        return found


def limits_for(settings: Settings, guild: Guild | None, model: str) -> Limits:
    profile = profile_for(model)
    max_side = min(settings.max_side, guild.max_side if guild and guild.max_side else settings.max_side)
    guild_max_steps = guild.max_steps if guild and guild.max_steps else settings.max_steps
    max_steps = min(profile.max_steps, settings.max_steps, guild_max_steps)
    return Limits(
        max_side=max_side,
        max_steps=max_steps,
        default_steps=min(profile.steps, max_steps),
        side=profile.side,
        multiple=profile.multiple,
        default_style=guild.default_style if guild else None,
    )


@dataclass(frozen=True)
class Progress:
    status: str
    position: int
    eta_seconds: float
    step: int | None
    steps: int
    model: str = ""
    engine_online: bool = True
    # The engine's newest live preview of a running job (a small JPEG), when it sends them.
    preview: bytes | None = None

    def describe(self, locale: str = i18n.DEFAULT_LOCALE) -> str:
        """What a member reads; it changes only when something they would notice does (the state, the
        place in line, the step, the ETA's minute), so that an unchanged text costs no edit."""
        if self.status == JobStatus.RUNNING:
            return i18n.text(locale, "progress.running", step=self.step or 0, steps=self.steps)
        minutes = round(self.eta_seconds / 60)
        if not self.engine_online:
            return i18n.text(locale, "progress.queued_no_engine", position=self.position, model=self.model)
        if minutes >= 1:
            return i18n.text(locale, "progress.queued_minutes", position=self.position, minutes=minutes)
        if self.eta_seconds >= 1:
            return i18n.text(locale, "progress.queued_under_a_minute", position=self.position)
        return i18n.text(locale, "progress.queued_at", position=self.position)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _has_lone_surrogates(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def parse_size(text: str) -> tuple[int, int]:
    """``512``, ``512x768`` or ``768×512`` → (width, height)."""
    cleaned = text.lower().replace("×", "x").replace(" ", "")
    parts = cleaned.split("x")
    try:
        if len(parts) == 1:
            side = int(parts[0])
            return side, side
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    shown = text if len(text) <= 20 else text[:20] + "…"  # an error is one short line, never the input echoed
    raise InvalidRequest("errors.size_format", shown=shown)


class JobService:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        queue: JobQueue,
        expander: Expander,
        quota: QuotaService,
        metrics: BotMetrics | None = None,
        bandit: VariantBandit | None = None,
    ) -> None:
        self.settings = settings
        self.db = database
        self.queue = queue
        self.expander = expander
        self.quota = quota
        self.metrics = metrics or BotMetrics()
        self.bandit = bandit
        self._engines_seen: dict[str, tuple[float, bool]] = {}

    def validate(
        self, request: ImagineRequest, guild: Guild | None, preferences: dict[str, Any] | None = None
    ) -> Resolved:
        """Every option checked before anything is written; raises InvalidRequest with a short reason.

        Where an option is missing, it comes from, in order: inline flags in the prompt (``--ar 16:9``),
        the member's /settings, the server's settings, the model's defaults.
        """
        preferences = preferences or {}
        if _has_lone_surrogates(request.prompt):
            # Undecodable bytes (a broken paste): the tokenizer and the database would fail on them later.
            raise InvalidRequest("errors.prompt_broken_text")
        inline = parse_inline(request.prompt)
        prompt = inline.prompt
        if not prompt:
            raise InvalidRequest("errors.prompt_empty")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest("errors.prompt_too_long", length=len(prompt), limit=MAX_PROMPT_CHARS)
        model = request.model or self.settings.image_model
        if request.model and guild is not None and guild.allowed_models and model not in guild.allowed_models:
            raise PolicyRefused("errors.model_not_allowed", model=model)
        profile = profile_for(model)
        limits = limits_for(self.settings, guild, model)
        max_side = limits.max_side
        width, height = request.width, request.height
        aspect = inline.aspect or (parse_aspect(preferences["aspect"]) if preferences.get("aspect") else None)
        if width is None and height is None and aspect is not None:
            width, height = size_for_aspect(aspect, profile.side, profile.multiple, MIN_SIDE)
        width = width or profile.side
        height = height or profile.side
        for name, value in (("width", width), ("height", height)):
            if not MIN_SIDE <= value <= max_side:
                raise InvalidRequest(f"errors.{name}_range", low=MIN_SIDE, high=max_side, got=value)
            if value % profile.multiple:
                raise InvalidRequest(f"errors.{name}_multiple", multiple=profile.multiple, got=value)
        max_steps = limits.max_steps
        if request.kind in EDIT_KINDS or request.kind == JobKind.DESCRIBE:
            # Edits and descriptions run other models than the image model, with their own step counts.
            guild_max_steps = guild.max_steps if guild and guild.max_steps else self.settings.max_steps
            max_steps = min(self.settings.max_steps, guild_max_steps)
        steps = _first(request.steps, inline.steps, limits.default_steps)
        if not 1 <= steps <= max_steps:
            raise InvalidRequest("errors.steps_range", high=max_steps, got=steps)
        seed = _first(request.seed, inline.seed)
        if seed is not None and not 0 <= seed < SEED_LIMIT:
            raise InvalidRequest("errors.seed_range", high=SEED_LIMIT - 1)
        count = _first(
            request.count, inline.count, preferences.get("count"), guild.grid_size if guild else None, profile.grid
        )
        if not 1 <= count <= MAX_COUNT:
            raise InvalidRequest("errors.count_range", high=MAX_COUNT)
        if request.strength is not None and not 0.0 < request.strength <= 1.0:
            raise InvalidRequest("errors.strength_range")
        scoring = guild.scoring if guild is not None and guild.scoring is not None else True
        best_of = _first(request.best_of, guild.best_of if guild else None, 1)
        if not 1 <= best_of <= MAX_BEST_OF:
            raise InvalidRequest("errors.best_of_range", high=MAX_BEST_OF, got=best_of)
        if best_of > 1 and not scoring:
            raise InvalidRequest("errors.best_of_needs_scoring")
        if request.kind != JobKind.TEXT_TO_IMAGE:
            best_of = 1  # variations and upscales are of one chosen image
        spec = JobSpec(
            kind=request.kind,
            member_prompt=prompt,
            model_prompt=prompt,
            negative_prompt=", ".join(n.strip() for n in (request.negative, inline.negative) if n and n.strip()),
            model=model,
            width=width,
            height=height,
            steps=steps,
            guidance=request.guidance if request.guidance is not None else profile.guidance,
            seed=seed if seed is not None else secrets.randbelow(SEED_LIMIT),
            count=count,
            strength=request.strength,
            init_image=request.init_image,
            best_of=best_of,
            scoring=scoring,
            plan=request.plan,
        )
        style = request.style or inline.style or preferences.get("style") or (guild.default_style if guild else None)
        raw = request.raw or inline.raw or bool(preferences.get("raw")) or bool(guild and guild.expansion_mode == "raw")
        chosen = raw or "raw" in preferences or bool(guild and guild.expansion_mode)
        return Resolved(spec, style, raw, chosen)

    async def _check_policy(self, request: ImagineRequest, guild: Guild | None, text: str) -> None:
        if guild is not None and guild.allowed_channels and request.channel_id not in guild.allowed_channels:
            raise _refusal(request, "errors.channel_not_enabled", "channel")
        nsfw_allowed = bool(guild and guild.nsfw_policy == "allow" and request.channel_nsfw)
        verdict = check_prompt(text, banned_words=guild.banned_words if guild else (), nsfw_allowed=nsfw_allowed)
        if not verdict.allowed:
            async with self.db.transaction() as session:
                session.add(
                    ModerationEvent(
                        guild_id=request.guild_id,
                        user_id=request.user_id,
                        prompt=text,
                        reason=verdict.reason,
                        rule=verdict.rule,
                    )
                )
            log.info("refused a prompt from user %s in guild %s: %s", request.user_id, request.guild_id, verdict.rule)
            raise _refusal(request, verdict.key, verdict.rule, **verdict.params)

    async def screen(self, request: ImagineRequest) -> tuple[Guild | None, Resolved]:
        """Everything that can refuse a request before any model time is spent on it (a ban, a bad
        option, moderation, the quota), writing nothing but a refused prompt's moderation event."""
        # One session for all of it, without a transaction: each statement is one trip to the database's
        # thread. They need no common snapshot: the reservation checks the quota again as it writes.
        async with self.db.glances() as session:
            # The guild is read once per request: the checks below and the reservation all use this copy.
            guild = await session.get(Guild, request.guild_id)
            member = await session.get(Member, (request.guild_id, request.user_id))
            if member is not None and member.banned:
                raise PolicyRefused("errors.banned")
            preferences = dict(member.preferences) if member is not None and member.preferences else {}
            resolved = replace(
                self.validate(request, guild, preferences), on_record=guild is not None and member is not None
            )
            spec = resolved.spec
            await self._check_policy(request, guild, spec.member_prompt)
            await self.quota.check(
                session,
                guild,
                request.guild_id,
                request.user_id,
                spec.count * spec.best_of,  # every candidate is drawn, so every one is charged
                spec.compute_units,
                request.role_ids,
            )
        return guild, resolved

    async def check_text(self, request: ImagineRequest, text: str) -> None:
        """Moderation of text that is not the member's own words (a caption): the same rules as a prompt."""
        async with self.db.sessions() as session:
            guild = await session.get(Guild, request.guild_id)
        await self._check_policy(request, guild, text)

    async def submit(self, request: ImagineRequest) -> JobRecord:
        """Validate, refuse (ban, policy, quota) before any model time is spent, expand, then reserve
        quota and enqueue in one transaction."""
        guild, resolved = await self.screen(request)
        spec = resolved.spec
        units = spec.compute_units
        expansion = await self._expand(request, guild, resolved)
        if expansion.source != "parent":
            self.metrics.expanded(expansion.source, expansion.ms)
        if expansion.model_prompt != spec.member_prompt:
            await self._check_policy(request, guild, expansion.model_prompt)
        spec = replace(spec, model_prompt=expansion.model_prompt, negative_prompt=expansion.negative)
        job_id = uuid.uuid4().hex
        async with self.db.transaction() as session:
            if not resolved.on_record:
                await self._ensure_member(session, request)
            await self.quota.reserve(
                session,
                guild=guild,
                guild_id=request.guild_id,
                user_id=request.user_id,
                job_id=job_id,
                images=spec.count * spec.best_of,  # every candidate is drawn, so every one is charged
                compute_units=units,
                role_ids=request.role_ids,
            )
            job = job_row(
                job_id,
                spec,
                guild_id=request.guild_id,
                user_id=request.user_id,
                channel_id=request.channel_id,
                parent_job_id=request.parent_job_id,
                expansion_source=expansion.source,
                expansion_guard=expansion.guard,
                variant=expansion.variant,
                style=expansion.style,
                max_attempts=self.settings.max_attempts,
                compute_units=units,
            )
            session.add(job)
            await session.flush()
            record = JobRecord.of(job)
            to_publish = ledger.queued_of(job)
        await self._publish_or_undo(to_publish)
        log.info("queued job %s for user %s in guild %s", job_id, request.user_id, request.guild_id)
        return record

    async def explain(self, job_id: str, index: int = 0) -> JobRecord:
        """The explanation job of one image of a finished job: queued once, then the same job for
        everyone who asks (an image's explanation never changes), and never charged to anyone."""
        from bot.services.explain import explain_spec

        parent = await self.get(job_id)
        if parent.kind != JobKind.TEXT_TO_IMAGE:
            raise InvalidRequest("explain.prompt_images_only")
        spec = replace(explain_spec(parent, index), kind=JobKind.EXPLAIN, init_image=parent.images[index].path)
        async with self.db.transaction() as session:
            existing = (
                await session.execute(
                    select(Job)
                    .where(
                        Job.parent_job_id == parent.id,
                        Job.kind == JobKind.EXPLAIN,
                        Job.seed == spec.seed,
                        Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]),
                    )
                    .limit(1)
                )
            ).scalar_one_or_none()
            if existing is not None:
                return JobRecord.of(existing)
            job = job_row(
                uuid.uuid4().hex,
                spec,
                guild_id=parent.guild_id,
                user_id=parent.user_id,
                channel_id=None,  # answered privately to whoever asked, never posted by the delivery loop
                parent_job_id=parent.id,
                expansion_source=parent.expansion_source,
                style=parent.style,
                max_attempts=self.settings.max_attempts,
                compute_units=spec.compute_units,
            )
            session.add(job)
            await session.flush()
            record, to_publish = JobRecord.of(job), ledger.queued_of(job)
        await self._publish_or_undo(to_publish)
        log.info("queued explanation %s of job %s image %d", record.id, parent.id, index)
        return record

    async def _publish_or_undo(self, job: QueuedJob) -> None:
        """Send the committed job to the engines; if the queue cannot take it (Redis down), the job ends
        as failed with its quota given back, and the member is told: never stored, charged and lost."""
        try:
            await self.queue.publish(job)
        except Exception as error:
            log.error("could not queue job %s: %s", job.id, error)
            async with self.db.transaction() as session:
                await ledger.record_failure(
                    session, job.id, f"the queue is unavailable: {error}"[:500], lease_owner=None, retryable=False
                )
                # The member hears it now, from the refusal below: no "failed" post from the delivery loop.
                await session.execute(update(Job).where(Job.id == job.id).values(delivered_at=utcnow()))
            raise Unavailable("errors.queue_unavailable") from None

    async def _expand(self, request: ImagineRequest, guild: Guild | None, resolved: Resolved) -> Expansion:
        spec = resolved.spec
        if request.model_prompt is not None:
            # Variations and upscales keep their parent's prompts exactly.
            return Expansion(
                member_prompt=spec.member_prompt,
                model_prompt=request.model_prompt,
                negative=spec.negative_prompt,
                source=request.expansion_source or "parent",
                style=resolved.style,
                added="",
                tokens=0,
                ms=0.0,
            )
        options: dict[str, Any] = {
            "raw": resolved.raw,
            # A server that chose the presets gets them even where the host runs the LLM.
            "use_llm": not (guild and guild.expansion_mode == "presets"),
        }
        variant = None
        if self.bandit is not None and not resolved.expansion_chosen and spec.kind == JobKind.TEXT_TO_IMAGE:
            variant = await self.bandit.choose(guild, request.guild_id, spec.seed)
            if variant is not None:
                options.update(expansion_options(variant))
        try:
            expansion = await self.expander.expand(
                spec.member_prompt,
                style=resolved.style,
                seed=spec.seed,
                negative=spec.negative_prompt or None,
                **options,
            )
        except UnsupportedLanguage:
            raise InvalidRequest("errors.language_unsupported") from None
        except ValueError as error:  # the one ValueError here: a style no preset has
            from bot.services.expansion import STYLES

            shown = (resolved.style or "")[:50]
            raise InvalidRequest("errors.unknown_style", style=shown, styles=", ".join(sorted(STYLES))) from error
        return replace(expansion, variant=variant) if variant else expansion

    async def _ensure_member(self, session, request: ImagineRequest) -> None:  # type: ignore[no-untyped-def]
        await session.execute(sqlite_insert(Guild).values(id=request.guild_id).on_conflict_do_nothing())
        await session.execute(
            sqlite_insert(Member)
            .values(guild_id=request.guild_id, user_id=request.user_id, display_name=request.display_name)
            .on_conflict_do_nothing()
        )

    async def get(self, job_id: str) -> JobRecord:
        async with self.db.sessions() as session:
            job = await session.get(Job, job_id)
            if job is None:
                raise NotFound("errors.no_job", job_id=job_id[:40])
            return JobRecord.of(job)

    async def limits(self, guild_id: int, model: str | None = None) -> Limits:
        async with self.db.sessions() as session:
            guild = await session.get(Guild, guild_id)
        return limits_for(self.settings, guild, model or self.settings.image_model)

    async def visible_to(self, job_id: str, *, guild_id: int | None, user_id: int) -> JobRecord:
        """A job as /info may show it: in a server, only that server's jobs; in a direct message, only the
        member's own. Anything else reads as missing, so an id from another server reveals nothing."""
        job = await self.get(job_id)
        if (job.guild_id != guild_id) if guild_id is not None else (job.user_id != user_id):
            raise NotFound("errors.no_job", job_id=job_id[:40])
        return job

    async def lineage(self, job_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The jobs a job was made from, nearest first (an edit of an edit of an image): each one's id,
        kind, the member's words, and an edit's mode and plan."""
        chain: list[dict[str, Any]] = []
        async with self.db.sessions() as session:
            job = await session.get(Job, job_id)
            seen = {job_id}
            while job is not None and job.parent_job_id and len(chain) < limit:
                parent = await session.get(Job, job.parent_job_id)
                if parent is None or parent.id in seen:
                    break
                seen.add(parent.id)
                entry: dict[str, Any] = {
                    "job_id": parent.id,
                    "kind": parent.kind,
                    "member_prompt": parent.member_prompt,
                }
                if parent.plan:
                    entry.update(mode=parent.plan.get("mode"), plan=parent.plan)
                chain.append(entry)
                job = parent
        return chain

    async def wait(self, job_id: str, *, timeout: float | None = None, poll_seconds: float = 0.1) -> JobRecord:
        """Poll until the job ends. Polling a WAL database is cheap and needs no extra channel."""
        async with asyncio.timeout(timeout):
            while True:
                job = await self.get(job_id)
                if job.terminal:
                    return job
                await asyncio.sleep(poll_seconds)

    async def cancel(self, job_id: str, *, user_id: int | None = None) -> str:
        job = await self.get(job_id)
        if user_id is not None and job.user_id != user_id:
            raise PolicyRefused("errors.cancel_not_yours")
        status = await self.queue.cancel(job_id)
        return status or "missing"

    async def list_jobs(
        self, *, limit: int = 50, status: str | None = None, guild_id: int | None = None
    ) -> list[JobRecord]:
        query = select(Job).order_by(Job.created_at.desc()).limit(limit)
        if status:
            query = query.where(Job.status == status)
        if guild_id is not None:
            query = query.where(Job.guild_id == guild_id)
        async with self.db.sessions() as session:
            return [JobRecord.of(job) for job in (await session.execute(query)).scalars().all()]

    async def retry(self, job_id: str) -> JobRecord:
        """Operator's retry of an ended job: back in the queue with fresh attempts, charged again."""
        async with self.db.transaction() as session:
            job = await session.get(Job, job_id)
            if job is None:
                raise NotFound("errors.no_job", job_id=job_id[:40])
            if JobRecord.of(job).delivery == "undeliverable":
                # The image exists; only posting it failed: try posting again, not drawing it again.
                job.delivery_attempts, job.next_delivery_at = 0, None
                await session.flush()
                return JobRecord.of(job)
            if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise InvalidRequest("errors.retry_state", job_id=job_id, status=job.status)
            job.status = JobStatus.QUEUED
            job.attempts = 0
            job.cancel_requested = False
            job.finished_at = None
            job.error = None
            job.available_at = utcnow()
            usage = await session.get(Usage, job_id)
            if usage is not None:
                usage.refunded_at = None
            await session.flush()
            record, to_publish = JobRecord.of(job), ledger.queued_of(job)
        await self.queue.publish(to_publish)
        return record

    async def derived_request(self, parent_id: str, index: int, kind: str, **member: Any) -> ImagineRequest:
        """A variation (img2img, fresh seeds) or an upscale (2×, enhanced) of one image of a finished job."""
        parent = await self.get(parent_id)
        if parent.status != JobStatus.SUCCEEDED or not 0 <= index < len(parent.images):
            raise InvalidRequest("errors.image_gone")
        image = parent.images[index]
        common = {
            "prompt": parent.member_prompt,
            "negative": parent.negative_prompt or None,
            "style": parent.style,
            "model_prompt": parent.model_prompt,
            "init_image": image.path,
            "parent_job_id": parent.id,
            "model": parent.model,
            "steps": parent.steps,
            **member,
        }
        if kind == JobKind.UPSCALE:
            width, height = self.upscaled_size(parent.width, parent.height, parent.model)
            return ImagineRequest(kind=kind, width=width, height=height, seed=image.seed, count=1, **common)
        return ImagineRequest(
            kind=JobKind.IMAGE_TO_IMAGE, width=parent.width, height=parent.height, strength=0.6, **common
        )

    def upscaled_size(self, width: int, height: int, model: str) -> tuple[int, int]:
        """Twice the size, or as close as the server's size limit allows."""
        multiple = profile_for(model).multiple
        factor = min(2.0, self.settings.max_side / max(width, height))
        if factor <= 1.0:
            raise InvalidRequest("errors.already_largest")
        return (int(width * factor) // multiple * multiple, int(height * factor) // multiple * multiple)

    async def set_preferences(self, guild_id: int, user_id: int, **changes: Any) -> dict[str, Any]:
        """Store a member's /settings; returns them all. Unknown styles are refused here, not at /imagine."""
        style = changes.get("style")
        if style is not None:
            from bot.services.expansion import STYLES

            if style.lower() not in STYLES:
                raise InvalidRequest("errors.unknown_style", style=style[:50], styles=", ".join(sorted(STYLES)))
            changes["style"] = style.lower()
        async with self.db.transaction() as session:
            await session.execute(sqlite_insert(Guild).values(id=guild_id).on_conflict_do_nothing())
            await session.execute(
                sqlite_insert(Member).values(guild_id=guild_id, user_id=user_id).on_conflict_do_nothing()
            )
            member = await session.get(Member, (guild_id, user_id))
            assert member is not None
            preferences = {**(member.preferences or {}), **{k: v for k, v in changes.items() if v is not None}}
            member.preferences = preferences
        return preferences

    async def progress(self, job_id: str) -> Progress:
        """Where a job stands: its place in the queue and a wait estimate, or its denoising step."""
        async with self.db.glances() as session:
            job = await session.get(Job, job_id)
            if job is None:
                raise NotFound("errors.no_job", job_id=job_id[:40])
            ahead = 0
            if job.status == JobStatus.QUEUED:
                ahead = (
                    await session.execute(
                        select(func.count())
                        .select_from(Job)
                        .where(Job.status == JobStatus.QUEUED, Job.created_at < job.created_at)
                    )
                ).scalar_one()
            recent = (await session.execute(recent_compute_seconds())).scalar_one()
        online = job.status != JobStatus.QUEUED or await self._engine_online(job.model)
        preview = None
        if job.status == JobStatus.RUNNING:
            preview = await asyncio.to_thread(_read_if_present, ledger.preview_path(self.settings.images_dir, job_id))
        return Progress(
            job.status,
            int(ahead) + 1,
            (int(ahead) + 1) * float(recent or 0.0),
            job.progress_step,
            job.steps,
            job.model,
            online,
            preview,
        )

    async def _engine_online(self, model: str) -> bool:
        """Whether a live engine serves ``model``, asked of the queue at most every few seconds: the
        progress pass wants it for every waiting job, every second."""
        now = time.monotonic()
        known = self._engines_seen.get(model)
        if known is None or now - known[0] > ENGINE_CHECK_SECONDS:
            known = self._engines_seen[model] = (now, await self.queue.live_workers(model) > 0)
        return known[1]

    async def expire_queued(self, older_than_seconds: float) -> list[str]:
        """Cancel (and refund) the jobs that have waited longer than that without an engine taking
        them; the delivery loop then tells each member."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        async with self.db.sessions() as session:
            stale = (
                (await session.execute(select(Job.id).where(Job.status == JobStatus.QUEUED, Job.created_at < cutoff)))
                .scalars()
                .all()
            )
        expired = []
        for job_id in stale:
            if await self.queue.cancel(job_id) == JobStatus.CANCELLED:
                async with self.db.transaction() as session:
                    await session.execute(
                        update(Job)
                        .where(Job.id == job_id)
                        .values(error=f"no engine took it within {older_than_seconds / 60:.0f} minutes")
                    )
                expired.append(job_id)
        if expired:
            log.warning("cancelled %d job(s) no engine took in time", len(expired))
        return expired


def recent_compute_seconds() -> Select[tuple[float | None]]:
    """The mean compute time of the last RECENT_COSTS finished jobs, not of every job ever: the wait
    estimate follows the engines as they are now, and reads a few rows of the covering partial index
    ix_jobs_costed however long the server's history."""
    costs = (
        select(Job.gpu_seconds)
        .where(Job.gpu_seconds.is_not(None))
        .order_by(Job.finished_at.desc())
        .limit(RECENT_COSTS)
        .subquery()
    )
    return select(func.avg(costs.c.gpu_seconds))


def _read_if_present(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def discard_preview(images_dir: Path, job_id: str) -> None:
    """The live preview has no use once the result is out."""
    ledger.preview_path(images_dir, job_id).unlink(missing_ok=True)


class RuleRefused(PolicyRefused):
    """A refusal as an admin reads it: the member's explanation, then which rule refused it, to tune
    the rules by."""

    def __init__(self, key: str, /, *, rule: str, **params: Any) -> None:
        super().__init__(key, **params)
        self.rule = rule

    def __str__(self) -> str:
        return super().__str__() + i18n.text(i18n.DEFAULT_LOCALE, "errors.refused_rule", rule=self.rule)

    def localized(self, locale: str | None) -> str:
        return super().localized(locale) + i18n.text(locale, "errors.refused_rule", rule=self.rule)


def _refusal(request: ImagineRequest, key: str, rule: str, **params: Any) -> PolicyRefused:
    if request.is_admin and rule:
        return RuleRefused(key, rule=rule, **params)
    return PolicyRefused(key, **params)


def job_row(job_id: str, spec: JobSpec, **fields: Any) -> Job:
    """A queued job row carrying ``spec``; ``fields`` add the rest (who asked, where, the expansion)."""
    now = utcnow()
    return Job(
        id=job_id,
        **spec.to_dict(),
        status=JobStatus.QUEUED,
        created_at=now,
        available_at=now,
        images=[],  # a new job has none; set, so that reading them needs no lazy load
        **fields,
    )
