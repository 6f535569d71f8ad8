"""A job's life in the shared database, written by the queue backends: claimed, progressing, ended.

The bot owns the schema (bot/db/models.py and the migrations) and writes a job's request; the queue
owns the columns a job's execution changes. These are those columns, declared here rather than
imported so that the engine never loads the bot; tests/integration/test_queue_contract.py runs them
against the migrated schema. The SQLite backend applies these transitions in the engine process, the
Redis backend in the bot when a result arrives. Either way a failed or cancelled job gives its reserved
quota back, and applying the same outcome twice changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    column,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from engine.contract import GeneratedImage, JobResult, JobSpec, JobStatus, QueuedJob, utcnow

log = logging.getLogger(__name__)

jobs = table(
    "jobs",
    column("id", String),
    column("user_id", BigInteger),
    column("kind", String),
    column("member_prompt", String),
    column("model_prompt", String),
    column("negative_prompt", String),
    column("model", String),
    column("scheduler", String),
    column("width", Integer),
    column("height", Integer),
    column("steps", Integer),
    column("guidance", Float),
    column("seed", BigInteger),
    column("count", Integer),
    column("strength", Float),
    column("init_image", String),
    column("best_of", Integer),
    column("scoring", Boolean),
    column("scorer", String),
    column("candidates", JSON),
    column("explanation", JSON),
    column("plan", JSON),
    column("status", String),
    column("attempts", Integer),
    column("max_attempts", Integer),
    column("available_at", DateTime),
    column("lease_owner", String),
    column("lease_expires_at", DateTime),
    column("cancel_requested", Boolean),
    column("progress_step", Integer),
    column("error", String),
    column("created_at", DateTime),
    column("started_at", DateTime),
    column("finished_at", DateTime),
    column("gpu_seconds", Float),
    column("outcome", JSON),
)
images = table(
    "images",
    column("job_id", String),
    column("index", Integer),
    column("path", String),
    column("width", Integer),
    column("height", Integer),
    column("size_bytes", Integer),
    column("sha256", String),
    column("nsfw_score", Float),
    column("seed", BigInteger),
    column("score", Float),
    column("alignment", Float),
    column("created_at", DateTime),
)
usage = table(
    "usage",
    column("job_id", String),
    column("gpu_seconds", Float),
    column("refunded_at", DateTime),
)
workers = table(
    "workers",
    column("id", String),
    column("host", String),
    column("pid", Integer),
    column("model", String),
    column("started_at", DateTime),
    column("heartbeat_at", DateTime),
    column("stopped_at", DateTime),
)

SPEC_COLUMNS = [jobs.c[name] for name in JobSpec.__dataclass_fields__]
# Retry back-off: 2 s, 4 s, 8 s … for both backends.
BACKOFF_SECONDS = 2.0


def retry_backoff_seconds(attempt: int) -> float:
    """How long a job that failed its ``attempt``-th try waits before the next."""
    return BACKOFF_SECONDS * 2 ** (attempt - 1)


def spec_of(row: Any) -> JobSpec:
    """The JobSpec of a row selected with SPEC_COLUMNS (or of the bot's ORM object of the job)."""
    return JobSpec(**{name: getattr(row, name) for name in JobSpec.__dataclass_fields__})


QUEUED_COLUMNS = [*SPEC_COLUMNS, jobs.c.id, jobs.c.user_id, jobs.c.attempts, jobs.c.max_attempts, jobs.c.created_at]


def queued_of(row: Any) -> QueuedJob:
    """What a queue backend carries of a committed job: a row selected with QUEUED_COLUMNS, or the bot's
    ORM object of it."""
    return QueuedJob(row.id, row.user_id, spec_of(row), row.attempts, row.max_attempts, row.created_at)


def image_path(images_dir: Path, job_id: str, index: int) -> Path:
    # Deterministic, so a job executed twice overwrites rather than duplicates its files.
    return images_dir / job_id[:2] / f"{job_id}-{index}.png"


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary sibling and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


@dataclass(frozen=True)
class StagedImages:
    """A result's PNGs written beside their final paths, moved into place only once its lease is known
    to hold, so an engine that lost its lease never overwrites the images of the one that has it."""

    staged: list[Path]
    final: list[Path]

    def publish(self) -> None:
        for staged, final in zip(self.staged, self.final, strict=True):
            staged.replace(final)

    def discard(self) -> None:
        for staged in self.staged:
            staged.unlink(missing_ok=True)


def stage_images(images_dir: Path, job_id: str, generated: list[GeneratedImage]) -> StagedImages:
    token = uuid.uuid4().hex[:12]
    final = [image_path(images_dir, job_id, image.index) for image in generated]
    staged = [path.with_name(f"{path.name}.{token}.staged") for path in final]
    for path, image in zip(staged, generated, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.png)
    return StagedImages(staged, final)


# Result files other than the images travel inside ``JobResult.extra`` as base64 under these keys (the
# same through SQLite and Redis) and are written beside the job's images once its result is recorded;
# the stored outcome names their paths instead: {"mask_png": …} becomes {"mask": "…/JOB-mask.png"}.
EXTRA_FILE_SUFFIX = "_png"
# What the scorer and the explainer put in ``JobResult.extra`` has columns of its own.
EXTRA_WITH_COLUMNS = frozenset({"scorer", "candidates", "explanation"})


def outcome_of(success: Success) -> dict[str, Any]:
    """The result's extra data as stored, its files written next to the first image."""
    outcome: dict[str, Any] = {}
    for key, value in success.result.extra.items():
        if key in EXTRA_WITH_COLUMNS:
            continue
        if key.endswith(EXTRA_FILE_SUFFIX) and isinstance(value, str):
            name = key.removesuffix(EXTRA_FILE_SUFFIX)
            if not success.paths:
                continue
            path = success.paths[0].with_name(f"{success.job_id}-{name}.png")
            write_atomically(path, base64.b64decode(value))
            outcome[name] = str(path)
        else:
            outcome[key] = value
    return outcome


def write_images(images_dir: Path, job_id: str, generated: list[GeneratedImage]) -> list[Path]:
    paths = []
    for image in generated:
        path = image_path(images_dir, job_id, image.index)
        write_atomically(path, image.png)
        paths.append(path)
    return paths


def preview_path(images_dir: Path, job_id: str) -> Path:
    """A running job's newest live preview: one file per job, replaced as the image forms, removed
    once the job's result is out."""
    return images_dir / "previews" / f"{job_id}.jpg"


def open_job(job_id: str, lease_owner: str | None) -> ColumnElement[bool]:
    """The row a result may still change. With a lease owner (SQLite backend) the row must be running
    under that lease; without one (results arriving from Redis, where the row never left "queued"
    until its start event) any row not yet ended will do, which also makes applying the same result
    twice harmless."""
    if lease_owner is not None:
        return and_(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING, jobs.c.lease_owner == lease_owner)
    return and_(jobs.c.id == job_id, jobs.c.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))


@dataclass(frozen=True)
class Success:
    """A finished job to record: its result, where its images were written, the lease it ran under
    (None for results that arrive from Redis) and the attempt that produced it."""

    job_id: str
    result: JobResult
    paths: list[Path]
    lease_owner: str | None
    attempt: int


async def record_successes(session: AsyncSession, successes: list[Success]) -> list[bool]:
    """Mark the jobs succeeded, in four statements however many there are (one transaction per job
    was most of an engine batch's bookkeeping). False for a job whose lease was lost meanwhile."""
    if not successes:
        return []
    # With each job, whether it already has image rows: only a job drawn again after it recorded some
    # has them (its files were overwritten, its rows are replaced the same way), so the usual result
    # needs no delete.
    has_images = exists().where(images.c.job_id == jobs.c.id)
    found = (await session.execute(select(jobs.c.id, has_images).where(or_(*(_open(s) for s in successes))))).all()
    owned = {job_id for job_id, _ in found}
    redrawn = [job_id for job_id, had_images in found if had_images]
    recorded = [s for s in successes if s.job_id in owned]
    if recorded:
        now = utcnow()
        costs = [
            {"b_id": s.job_id, "b_gpu_seconds": s.result.gpu_seconds, "b_attempt": s.attempt, "b_now": now}
            for s in recorded
        ]
        outcomes = [
            {
                **cost,
                "b_scorer": s.result.extra.get("scorer"),
                "b_candidates": s.result.extra.get("candidates"),
                "b_explanation": s.result.extra.get("explanation"),
                "b_outcome": outcome_of(s) or None,
            }
            for s, cost in zip(recorded, costs, strict=True)
        ]
        await session.execute(_RECORD_SUCCESS, outcomes)
        if redrawn:
            await session.execute(_FORGET_IMAGES, {"ids": redrawn})
        image_rows = [
            {
                "job_id": s.job_id,
                "index": image.index,
                "path": str(path),
                "width": image.width,
                "height": image.height,
                "size_bytes": len(image.png),
                "sha256": hashlib.sha256(image.png).hexdigest(),
                "nsfw_score": image.nsfw_score,
                "seed": image.seed,
                "score": image.score,
                "alignment": image.alignment,
                "created_at": now,
            }
            for s in recorded
            for image, path in zip(s.result.images, s.paths, strict=True)
        ]
        if image_rows:  # an empty list would be an INSERT of no values, which is an error
            await session.execute(_ADD_IMAGES, image_rows)
        await session.execute(_RECORD_COST, costs)
    return [s.job_id in owned for s in successes]


def _open(success: Success) -> ColumnElement[bool]:
    return open_job(success.job_id, success.lease_owner)


def _at_least(attempt: Any) -> Any:
    return func.max(jobs.c.attempts, attempt)


# record_successes' statements, built once: on a 2-core host building one cost as much as running it,
# and they are on the path of every result to its member.
_RECORD_SUCCESS = (
    jobs.update()
    .where(jobs.c.id == bindparam("b_id"))
    .values(
        status=JobStatus.SUCCEEDED,
        finished_at=bindparam("b_now", type_=DateTime),
        lease_owner=None,
        lease_expires_at=None,
        gpu_seconds=bindparam("b_gpu_seconds"),
        # The attempt that produced the result counts even when its start was never applied
        # (a Redis result event may be applied before the start event of the same attempt).
        attempts=_at_least(bindparam("b_attempt")),
        error=None,
        scorer=bindparam("b_scorer"),
        candidates=bindparam("b_candidates", type_=JSON),
        explanation=bindparam("b_explanation", type_=JSON),
        outcome=bindparam("b_outcome", type_=JSON),
    )
)
_FORGET_IMAGES = delete(images).where(images.c.job_id.in_(bindparam("ids", expanding=True)))
_ADD_IMAGES = insert(images)
_RECORD_COST = usage.update().where(usage.c.job_id == bindparam("b_id")).values(gpu_seconds=bindparam("b_gpu_seconds"))


async def mark_started(session: AsyncSession, job_id: str, attempt: int) -> None:
    """A Redis start event: the row runs, with that attempt (never lowered by an older event)."""
    await session.execute(
        update(jobs)
        .where(open_job(job_id, None))
        .values(
            status=JobStatus.RUNNING,
            attempts=_at_least(attempt),
            started_at=func.coalesce(jobs.c.started_at, utcnow()),
            progress_step=None,
        )
    )


async def record_progress(session: AsyncSession, job_id: str, step: int, *, lease_owner: str | None = None) -> None:
    condition = and_(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING)
    if lease_owner is not None:
        condition = and_(condition, jobs.c.lease_owner == lease_owner)
    await session.execute(update(jobs).where(condition).values(progress_step=step))


async def refund(session: AsyncSession, job_ids: list[str]) -> None:
    if job_ids:
        await session.execute(
            update(usage).where(usage.c.job_id.in_(job_ids), usage.c.refunded_at.is_(None)).values(refunded_at=utcnow())
        )


async def record_failure(
    session: AsyncSession,
    job_id: str,
    error: str,
    *,
    lease_owner: str | None,
    retryable: bool,
    attempt: int | None = None,
    cancelled: bool = False,
) -> str | None:
    """Put the job back for another attempt or end it; returns the new status, None if not ours.
    ``attempt`` (from a Redis event) raises the row's count to it; ``cancelled`` ends it as cancelled."""
    condition = open_job(job_id, lease_owner)
    row = (
        await session.execute(select(jobs.c.attempts, jobs.c.max_attempts, jobs.c.cancel_requested).where(condition))
    ).one_or_none()
    if row is None:
        return None
    attempts = max(row.attempts, attempt or 0)
    now = utcnow()
    values: dict[str, Any] = {
        "error": error[:4000],
        "lease_owner": None,
        "lease_expires_at": None,
        "attempts": attempts,
    }
    if cancelled or row.cancel_requested:
        values |= {"status": JobStatus.CANCELLED, "cancel_requested": True}
    elif retryable and attempts < row.max_attempts:
        values |= {
            "status": JobStatus.QUEUED,
            "available_at": now + timedelta(seconds=retry_backoff_seconds(attempts)),
        }
        await session.execute(update(jobs).where(condition).values(**values))
        return JobStatus.QUEUED
    else:
        values["status"] = JobStatus.FAILED
    await session.execute(update(jobs).where(condition).values(**values, finished_at=now))
    await refund(session, [job_id])
    return values["status"]


async def cancel(session: AsyncSession, job_id: str) -> str | None:
    """A queued job ends at once with a refund; a running one is flagged for its worker."""
    status = (await session.execute(select(jobs.c.status).where(jobs.c.id == job_id))).scalar_one_or_none()
    if status is None:
        return None
    if status == JobStatus.QUEUED:
        await session.execute(
            update(jobs).where(jobs.c.id == job_id).values(status=JobStatus.CANCELLED, finished_at=utcnow())
        )
        await refund(session, [job_id])
        return JobStatus.CANCELLED
    if status == JobStatus.RUNNING:
        # The worker sees this on its next lease renewal and interrupts the pipeline.
        await session.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested=True))
        return "cancelling"
    return status
