"""Terminal transitions of a job record, shared by every queue backend.

The SQLite backend applies them in the engine process; the Redis backend applies them in the bot when
a result arrives. Either way a failed or cancelled job gives its reserved quota back.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.base import utcnow
from bot.db.models import Image, Job, JobStatus, Usage
from engine.queue.protocol import GeneratedImage, JobResult

log = logging.getLogger(__name__)


def image_path(images_dir: Path, job_id: str, index: int) -> Path:
    # Deterministic, so a job executed twice overwrites rather than duplicates its files.
    return images_dir / job_id[:2] / f"{job_id}-{index}.png"


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary sibling and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_images(images_dir: Path, job_id: str, images: list[GeneratedImage]) -> list[Path]:
    paths = []
    for image in images:
        path = image_path(images_dir, job_id, image.index)
        write_atomically(path, image.png)
        paths.append(path)
    return paths


def _open_job(job_id: str, lease_owner: str | None) -> list[Any]:
    """The row a result may still change. With a lease owner (SQLite backend) the row must be running
    under that lease; without one (results arriving from Redis, where the row never left "queued") any
    row not yet ended will do, which also makes applying the same result twice harmless."""
    if lease_owner is not None:
        return [Job.id == job_id, Job.status == JobStatus.RUNNING, Job.lease_owner == lease_owner]
    return [Job.id == job_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])]


@dataclass(frozen=True)
class Success:
    """A finished job to record: its result, where its images were written, and the lease it ran
    under (None for results that arrive from Redis, where the row never left "queued")."""

    job_id: str
    result: JobResult
    paths: list[Path]
    lease_owner: str | None


async def record_successes(session: AsyncSession, successes: list[Success]) -> list[bool]:
    """Mark the jobs succeeded, in five statements however many there are (one transaction per job
    was most of an engine batch's bookkeeping). False for a job whose lease was lost meanwhile."""
    if not successes:
        return []
    open_jobs = or_(*(and_(*_open_job(s.job_id, s.lease_owner)) for s in successes))
    owned = set((await session.execute(select(Job.id).where(open_jobs))).scalars())
    recorded = [s for s in successes if s.job_id in owned]
    if recorded:
        now = utcnow()
        jobs, usage = Job.__table__, Usage.__table__
        await session.execute(
            jobs.update()
            .where(jobs.c.id == bindparam("b_id"))
            .values(
                status=JobStatus.SUCCEEDED,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                gpu_seconds=bindparam("b_gpu_seconds"),
                compute_units=bindparam("b_compute_units"),
                error=None,
            ),
            [_costs(s) for s in recorded],
        )
        # A job run twice (a lost lease) overwrote its files; its rows are replaced the same way.
        await session.execute(delete(Image).where(Image.job_id.in_([s.job_id for s in recorded])))
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
            }
            for s in recorded
            for image, path in zip(s.result.images, s.paths, strict=True)
        ]
        if image_rows:  # an empty list would be an INSERT of no values, which is an error
            await session.execute(insert(Image), image_rows)
        await session.execute(
            usage.update()
            .where(usage.c.job_id == bindparam("b_id"))
            .values(gpu_seconds=bindparam("b_gpu_seconds"), compute_units=bindparam("b_compute_units")),
            [_costs(s) for s in recorded],
        )
    return [s.job_id in owned for s in successes]


def _costs(success: Success) -> dict[str, Any]:
    return {
        "b_id": success.job_id,
        "b_gpu_seconds": success.result.gpu_seconds,
        "b_compute_units": success.result.compute_units,
    }


async def record_success(
    session: AsyncSession, job_id: str, result: JobResult, paths: list[Path], *, lease_owner: str | None
) -> bool:
    """Mark the job succeeded; False when the lease was lost and someone else owns the job now."""
    return (await record_successes(session, [Success(job_id, result, paths, lease_owner)]))[0]


async def refund(session: AsyncSession, job_ids: list[str]) -> None:
    if job_ids:
        await session.execute(
            update(Usage).where(Usage.job_id.in_(job_ids), Usage.refunded_at.is_(None)).values(refunded_at=utcnow())
        )


async def record_failure(
    session: AsyncSession,
    job_id: str,
    error: str,
    *,
    lease_owner: str | None,
    retryable: bool,
    backoff_seconds: float = 2.0,
) -> str | None:
    """Put the job back for another attempt or end it; returns the new status, None if not ours."""
    conditions = _open_job(job_id, lease_owner)
    job = (await session.execute(select(Job).where(*conditions))).scalar_one_or_none()
    if job is None:
        return None
    now = utcnow()
    job.error = error[:4000]
    job.lease_owner = None
    job.lease_expires_at = None
    if job.cancel_requested:
        job.status = JobStatus.CANCELLED
    elif retryable and job.attempts < job.max_attempts:
        job.status = JobStatus.QUEUED
        job.available_at = now + timedelta(seconds=backoff_seconds * 2 ** (job.attempts - 1))
        return job.status
    else:
        job.status = JobStatus.FAILED
    job.finished_at = now
    await refund(session, [job_id])
    return job.status


def png_size(png: bytes) -> tuple[int, int]:
    with PILImage.open(io.BytesIO(png)) as image:
        return image.size
