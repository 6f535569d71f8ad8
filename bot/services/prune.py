"""Free disk space: image files and uploads old enough that nothing still needs them.

An image is kept while it is rated (preference data), while its job has not been posted to Discord yet,
or while an open job starts from it (a variation or an upscale in the queue). The rows stay, so /info and
the export still describe the job; a button on a pruned image says the image is gone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import exists, select

from bot.db.models import Image, Job, Rating
from bot.errors import InvalidRequest
from engine.contract import JobStatus, utcnow
from engine.queue.database import Database

log = logging.getLogger(__name__)

_UNITS = {"d": 86400, "h": 3600, "m": 60}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h`` or ``90m``."""
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit() or int(number) == 0:
        raise InvalidRequest("errors.age_format", shown=text[:20])
    return timedelta(seconds=int(number) * _UNITS[unit])


@dataclass(frozen=True)
class PruneReport:
    files: int
    bytes: int
    dry_run: bool

    def to_dict(self) -> dict[str, object]:
        return {"files": self.files, "bytes": self.bytes, "dry_run": self.dry_run}


async def prune(database: Database, uploads_dir: Path, *, older_than: timedelta, dry_run: bool) -> PruneReport:
    cutoff = utcnow() - older_than
    open_statuses = [JobStatus.QUEUED, JobStatus.RUNNING]
    async with database.sessions() as session:
        needed_inputs = set(
            (
                await session.execute(
                    select(Job.init_image).where(Job.status.in_(open_statuses), Job.init_image.is_not(None))
                )
            ).scalars()
        )
        images = (
            (
                await session.execute(
                    select(Image.path)
                    .join(Job, Job.id == Image.job_id)
                    .where(
                        Job.finished_at < cutoff,
                        Job.status.not_in(open_statuses),
                        # Posted, or never meant for Discord (a CLI job): nothing still waits to upload it.
                        (Job.message_id.is_not(None)) | (Job.channel_id.is_(None)),
                        ~exists().where(Rating.image_id == Image.id),
                    )
                )
            )
            .scalars()
            .all()
        )
    files, freed = await asyncio.to_thread(
        _remove, [Path(p) for p in images], uploads_dir, cutoff.timestamp(), needed_inputs, dry_run
    )
    log.info("%s %d file(s), %d bytes", "would remove" if dry_run else "removed", files, freed)
    return PruneReport(files, freed, dry_run)


def _remove(images: list[Path], uploads_dir: Path, cutoff: float, needed: set[str], dry_run: bool) -> tuple[int, int]:
    candidates = [p for p in images if str(p) not in needed]
    if uploads_dir.is_dir():
        candidates += [p for p in uploads_dir.iterdir() if p.is_file() and p.stat().st_mtime < cutoff]
    freed = files = 0
    for path in candidates:
        if str(path) in needed:
            continue
        try:
            size = path.stat().st_size
            if not dry_run:
                path.unlink()
        except FileNotFoundError:
            continue  # pruned before, or never written
        files += 1
        freed += size
    return files, freed
