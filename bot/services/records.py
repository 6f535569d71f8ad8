"""A job as the services hand it out: plain data, read from the database once, never an ORM row.

``JobRecord.to_dict`` is the one serializer of a job: /info, the CLI's ``--json`` and the ratings export
all print it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.contract import JobStatus, image_seed

# Failed posts of one result before it is left "undeliverable" (bot/services/delivery.py backs off between).
MAX_DELIVERY_ATTEMPTS = 8

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy import Row

    from bot.db.models import Image, Job


@dataclass(frozen=True)
class ImageRecord:
    id: int
    index: int
    seed: int
    path: str
    width: int
    height: int
    sha256: str
    nsfw_score: float | None
    score: float | None = None  # the engine's preference score; the grid is ordered by it
    alignment: float | None = None  # CLIP similarity to the member's own words

    @classmethod
    def of(cls, image: Image | Row[Any], job_seed: int) -> ImageRecord:
        return cls(
            id=image.id,
            index=image.index,
            # Stored since scoring (a best-of grid keeps candidates out of seed order); older rows
            # were always the job's seed plus the index.
            seed=image.seed if image.seed is not None else image_seed(job_seed, image.index),
            path=image.path,
            width=image.width,
            height=image.height,
            sha256=image.sha256,
            nsfw_score=image.nsfw_score,
            score=image.score,
            alignment=image.alignment,
        )


@dataclass(frozen=True)
class JobRecord:
    id: str
    status: str
    kind: str
    guild_id: int
    user_id: int
    channel_id: int | None
    parent_job_id: str | None
    member_prompt: str
    model_prompt: str
    negative_prompt: str
    expansion_source: str
    style: str | None
    model: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    count: int
    strength: float | None
    scheduler: str | None
    init_image: str | None
    best_of: int
    scoring: bool
    scorer: str | None
    candidates: list[dict[str, Any]] | None
    explanation: dict[str, Any] | None
    variant: str | None
    expansion_guard: str | None
    plan: dict[str, Any] | None
    outcome: dict[str, Any] | None
    attempts: int
    error: str | None
    compute_units: float
    gpu_seconds: float | None
    created_at: datetime
    finished_at: datetime | None
    message_id: int | None
    delivered_at: datetime | None
    delivery_attempts: int
    delivery_error: str | None
    images: tuple[ImageRecord, ...]

    @classmethod
    def of(cls, job: Job | Row[Any], images: Iterable[Image | Row[Any]] | None = None) -> JobRecord:
        """Built inside the session that read ``job`` (its images are loaded with it), or from a row
        of the jobs table and the rows of its images, in index order."""
        fields = {name: getattr(job, name) for name in cls.__dataclass_fields__ if name != "images"}
        loaded = job.images if images is None else images
        return cls(**fields, images=tuple(ImageRecord.of(image, job.seed) for image in loaded))

    @property
    def terminal(self) -> bool:
        return JobStatus(self.status).terminal

    @property
    def delivery(self) -> str | None:
        """Where the result stands with Discord: None (not ended, or not from Discord), "pending",
        "delivered" or "undeliverable" (Discord kept refusing it; a restart or `jobs retry` tries again)."""
        if self.message_id is not None:
            return "delivered"
        if not self.terminal or self.channel_id is None:
            return None
        if self.delivered_at is None and self.delivery_attempts >= MAX_DELIVERY_ATTEMPTS:
            return "undeliverable"
        return "pending"

    @property
    def image_paths(self) -> list[str]:
        return [image.path for image in self.images]

    def to_dict(self) -> dict[str, Any]:
        """Everything that made the job's images and what they cost; JSON-ready but for datetimes."""
        data = asdict(self)
        data["job_id"] = data.pop("id")
        data["images"] = [
            {
                "path": i.path,
                "seed": i.seed,
                "score": i.score,
                "alignment": i.alignment,
                "width": i.width,
                "height": i.height,
            }
            for i in self.images
        ]
        for optional in ("candidates", "explanation"):
            if not data[optional]:
                del data[optional]  # only a best-of job has candidates, only an explain job an explanation
        data["image"] = self.images[0].path if self.images else None
        data["delivery"] = self.delivery
        # What only edits and descriptions have stays out of other jobs' records (/info fits one message).
        for name in ("init_image", "plan", "outcome"):
            if data[name] is None:
                del data[name]
        return data
