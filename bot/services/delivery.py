"""Which finished jobs still need posting, claimed so that each is posted exactly once."""

from __future__ import annotations

import io
import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import ColumnElement, DateTime, Select, Update, and_, bindparam, or_, select, update

from bot.db.models import Guild, Image, Job
from bot.services.metrics import BotMetrics
from bot.services.records import MAX_DELIVERY_ATTEMPTS, JobRecord
from engine.contract import JobStatus, utcnow
from engine.queue import ledger
from engine.queue.database import Database

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes


def fit_upload(png: bytes, name: str, limit: int = DEFAULT_UPLOAD_LIMIT) -> Attachment:
    """PNG if it fits the guild's upload limit, else progressively smaller JPEGs (the PNG stays on disk)."""
    if len(png) <= limit:
        return Attachment(f"{name}.png", png)
    with PILImage.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        for quality in (92, 85, 75, 60):
            buffer = io.BytesIO()
            rgb.save(buffer, format="JPEG", quality=quality, optimize=True)
            if buffer.tell() <= limit:
                return Attachment(f"{name}.jpg", buffer.getvalue())
        rgb.thumbnail((rgb.width // 2, rgb.height // 2))
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=80)
        return Attachment(f"{name}.jpg", buffer.getvalue())


MASK_PREVIEW_SIDE = 256


def mask_overlay(source_path: str, mask_path: str, *, side: int = MASK_PREVIEW_SIDE) -> bytes:
    """A small picture of the source with the repaired region tinted: shown beside a repair's result,
    so the member sees what was changed."""
    with PILImage.open(source_path) as opened_source, PILImage.open(mask_path) as opened_mask:
        source = opened_source.convert("RGB")
        mask = opened_mask.convert("L").resize(source.size)
    tint = PILImage.new("RGB", source.size, (255, 64, 160))
    preview = PILImage.composite(tint, source, mask.point(lambda value: value * 6 // 10))
    preview.thumbnail((side, side))
    buffer = io.BytesIO()
    preview.save(buffer, format="PNG")
    return buffer.getvalue()


# zlib's fastest level for the contact sheet: the same pixels (PNG is lossless) in about half the time,
# for a file about 13% larger (`atelier bench sheet`). It is drawn for every delivery of a job of
# several images, on the member's path to them, and at level 6 four 512² images took a third of a
# second of the bot's CPU.
SHEET_COMPRESS_LEVEL = 1


def grid(pngs: list[bytes], *, compress_level: int = SHEET_COMPRESS_LEVEL) -> bytes:
    """Two-by-two (or one-row) contact sheet of a job's images, for one attachment in the channel."""
    images = [PILImage.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    width, height = images[0].size
    columns = 2 if len(images) > 2 else len(images)
    rows = (len(images) + columns - 1) // columns
    sheet = PILImage.new("RGB", (width * columns, height * rows))
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * width, (i // columns) * height))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def blur(png: bytes) -> bytes:
    """Heavy enough that nothing is recognisable; members can still ask an admin to review."""
    from PIL import ImageFilter

    with PILImage.open(io.BytesIO(png)) as image:
        blurred = image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=max(8, image.width // 12)))
    buffer = io.BytesIO()
    blurred.save(buffer, format="PNG")
    return buffer.getvalue()


def flagged_action(
    job: JobRecord, *, threshold: float, guild_allows_nsfw: bool, channel_nsfw: bool, action: str
) -> str:
    """ "show", "blur" or "withhold" for a finished job, from the classifier's scores and the policy."""
    scores = [image.nsfw_score for image in job.images if image.nsfw_score is not None]
    if not scores or max(scores) < threshold or (guild_allows_nsfw and channel_nsfw):
        return "show"
    return "withhold" if action == "withhold" else "blur"


DELIVERY_BACKOFF_BASE_SECONDS = 2.0
DELIVERY_BACKOFF_CAP_SECONDS = 300.0


def delivery_backoff(
    attempt: int,
    *,
    base: float = DELIVERY_BACKOFF_BASE_SECONDS,
    cap: float = DELIVERY_BACKOFF_CAP_SECONDS,
    rng: random.Random | None = None,
) -> float:
    """Seconds before delivery attempt ``attempt + 1``: doubling from ``base``, capped, drawn from the
    upper half of that bound so that stuck jobs do not retry in step."""
    bound = min(cap, base * 2 ** (attempt - 1))
    return (rng or random).uniform(bound / 2, bound)


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard whose gateway connection carries a guild's events and interactions, as Discord assigns it."""
    return (guild_id >> 22) % shard_count


def undeliverable() -> ColumnElement[bool]:
    """The jobs JobRecord.delivery calls "undeliverable": not posted, not being posted, out of tries."""
    return and_(Job.message_id.is_(None), Job.delivered_at.is_(None), Job.delivery_attempts >= MAX_DELIVERY_ATTEMPTS)


class DeliveryService:
    def __init__(
        self,
        database: Database,
        *,
        safety_threshold: float = 0.5,
        backoff_base_seconds: float = DELIVERY_BACKOFF_BASE_SECONDS,
        backoff_cap_seconds: float = DELIVERY_BACKOFF_CAP_SECONDS,
        metrics: BotMetrics | None = None,
        shards: tuple[int, list[int]] | None = None,
    ) -> None:
        self.db = database
        self.metrics = metrics or BotMetrics()
        # (count, ids): this process delivers only for the guilds on those shards, since the process
        # that holds a member's interaction is the one its shard's gateway connection delivered it to.
        self.shards = shards
        self.safety_threshold = safety_threshold
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self._claims: dict[int, tuple[Select[Any], Update, Select[Any]]] = {}

    async def flagged_action(self, job: JobRecord, *, channel_nsfw: bool) -> str:
        """What the server's policy does with this result in that channel: show, blur or withhold."""
        scores = [image.nsfw_score for image in job.images if image.nsfw_score is not None]
        if not scores or max(scores) < self.safety_threshold:
            return "show"  # nothing flagged: the server's policy cannot change that, no need to read it
        async with self.db.sessions() as session:
            guild = await session.get(Guild, job.guild_id)
        return flagged_action(
            job,
            threshold=self.safety_threshold,
            guild_allows_nsfw=bool(guild and guild.nsfw_policy == "allow"),
            channel_nsfw=channel_nsfw,
            action=guild.flagged_images if guild else "blur",
        )

    def _ready(self, limit: int) -> Select[tuple[Job]]:
        """Ended jobs from Discord that have not been posted yet and whose back-off is over, oldest first.
        The moment is a bind parameter, ``now``, so that claim_ready can build its statements once."""
        return (
            select(Job)
            .where(
                # The pass runs after every nudge. These three terms are the rows of the partial index
                # ix_jobs_undelivered, so it reads only the results not yet posted, however many the
                # server has posted before. "Ended" is said as "not waiting": SQLite would read every
                # ended job of the status index for `status IN (…)`, and NOT IN uses no index.
                Job.finished_at.is_not(None),
                Job.delivered_at.is_(None),
                Job.channel_id.is_not(None),
                Job.status.not_in([JobStatus.QUEUED, JobStatus.RUNNING]),
                Job.delivery_attempts < MAX_DELIVERY_ATTEMPTS,
                or_(Job.next_delivery_at.is_(None), Job.next_delivery_at <= bindparam("now", type_=DateTime)),
                *self._on_my_shards(),
            )
            .order_by(Job.finished_at)
            .limit(limit)
        )

    async def pending(self, limit: int = 20) -> list[JobRecord]:
        """What claim_ready would take now, taking nothing."""
        async with self.db.sessions() as session:
            found = await session.execute(self._ready(limit), {"now": utcnow()})
            return [JobRecord.of(job) for job in found.scalars().all()]

    async def claim_ready(self, limit: int = 20) -> list[JobRecord]:
        """Claim what is ready to post, oldest first: each job goes to exactly one caller, across bot
        processes. A glance first, so that a pass with nothing to post (most of them) never takes the
        write lock nor waits for an engine's; then one write transaction of two statements, the claim
        returning the jobs' rows and a read of their images, in Core rather than the ORM: the pass that
        finds a result is on the member's path to their image, and building ORM objects there cost
        more than running the statements."""
        glance, claim, images = self._claim_statements(limit)
        now = utcnow()
        async with self.db.glances() as session:
            connection = await session.connection()
            if (await connection.execute(glance, {"now": now})).first() is None:
                return []
        async with self.db.transaction() as session:
            connection = await session.connection()
            claimed = (await connection.execute(claim, {"now": now, "delivered_at": now})).all()
            if not claimed:
                return []
            ids = [job.id for job in claimed]
            found = (await connection.execute(images, {"ids": ids})).all()
        images_of: dict[str, list[Any]] = {job_id: [] for job_id in ids}
        for image in found:
            images_of[image.job_id].append(image)
        records = [JobRecord.of(job, images_of[job.id]) for job in claimed]
        return sorted(records, key=lambda record: record.finished_at or now)

    def _claim_statements(self, limit: int) -> tuple[Select[Any], Update, Select[Any]]:
        """The glance, the claim and the images read of claim_ready, built once per limit."""
        statements = self._claims.get(limit)
        if statements is None:
            ready_ids = self._ready(limit).with_only_columns(Job.id)
            jobs, images = Job.__table__, Image.__table__
            statements = self._claims[limit] = (
                ready_ids.limit(1),
                update(jobs)
                .where(jobs.c.id.in_(ready_ids.scalar_subquery()))
                .values(delivered_at=bindparam("delivered_at"))
                .returning(*jobs.c),
                select(images).where(images.c.job_id.in_(bindparam("ids", expanding=True))).order_by(images.c.index),
            )
        return statements

    def _on_my_shards(self) -> list[ColumnElement[bool]]:
        if self.shards is None:
            return []
        count, ids = self.shards
        return [(Job.guild_id.op(">>")(22) % count).in_(ids)]

    async def unclaim(self, job_id: str, error: str = "") -> str:
        """Posting failed: try again after a back-off that doubles (with jitter, up to a cap); after
        MAX_DELIVERY_ATTEMPTS the job is undeliverable and its quota is given back, once. Returns the
        job's delivery state."""
        async with self.db.transaction() as session:
            attempts = (
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id)
                    .values(
                        delivered_at=None,
                        delivery_attempts=Job.delivery_attempts + 1,
                        delivery_error=error[:500] or None,
                    )
                    .returning(Job.delivery_attempts)
                )
            ).scalar_one()
            if attempts >= MAX_DELIVERY_ATTEMPTS:
                await ledger.refund(session, [job_id])
                log.warning("job %s is undeliverable after %d attempts: %s", job_id, attempts, error)
                self.metrics.delivery("undeliverable")
                return "undeliverable"
            wait = delivery_backoff(attempts, base=self.backoff_base_seconds, cap=self.backoff_cap_seconds)
            await session.execute(
                update(Job).where(Job.id == job_id).values(next_delivery_at=utcnow() + timedelta(seconds=wait))
            )
        self.metrics.delivery("retry")
        return "pending"

    async def revive_undeliverable(self) -> int:
        """Give undeliverable results a fresh set of tries (at bot start; `jobs retry` does it for one)."""
        async with self.db.transaction() as session:
            result = await session.execute(
                update(Job).where(undeliverable()).values(delivery_attempts=0, next_delivery_at=None)
            )
        return result.rowcount or 0

    async def delivered(self, job_id: str, message_id: int) -> None:
        async with self.db.transaction() as session:
            await session.execute(update(Job).where(Job.id == job_id).values(message_id=message_id))
            await session.execute(update(Image).where(Image.job_id == job_id).values(message_id=message_id))
        self.metrics.delivery("delivered")

    async def job_for_message(self, message_id: int) -> JobRecord | None:
        async with self.db.sessions() as session:
            job = (await session.execute(select(Job).where(Job.message_id == message_id))).scalar_one_or_none()
            return JobRecord.of(job) if job is not None else None
