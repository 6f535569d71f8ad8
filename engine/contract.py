"""What the bot and the engine agree on, and all they share: standard library only.

The bot writes a job, a backend carries its ``JobSpec`` to an engine, the engine returns a ``JobResult``
or raises one of the two job errors. Nothing else crosses between the two packages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

# Seeds are 32-bit, as diffusers' generators and every other tool that reproduces an image expect.
SEED_LIMIT = 2**32


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobKind(StrEnum):
    TEXT_TO_IMAGE = "txt2img"
    IMAGE_TO_IMAGE = "img2img"
    UPSCALE = "upscale"
    # A re-run of one finished image while recording attention; ``init_image`` names the original
    # image to compare the re-run with, and the result's image is the heatmap grid.
    EXPLAIN = "explain"
    # The whole picture changes as an instruction says (InstructPix2Pix).
    EDIT = "edit"
    # One region, found from words (CLIPSeg), is redrawn by an inpainting model; the rest stays.
    REPAIR = "repair"
    # A caption of a member's image; no image comes back.
    DESCRIBE = "describe"


IMAGE_TO_IMAGE_KINDS = frozenset({JobKind.IMAGE_TO_IMAGE, JobKind.UPSCALE})
EDIT_KINDS = frozenset({JobKind.EDIT, JobKind.REPAIR})
# Every kind that reads the member's image from ``init_image``.
SOURCE_IMAGE_KINDS = IMAGE_TO_IMAGE_KINDS | EDIT_KINDS | {JobKind.DESCRIBE}

# Relative to text-to-image at the same size and steps. An upscale runs a light pass over a known
# image; a variation is a full image-to-image pass. An edit is a full pass (InstructPix2Pix runs its
# UNet three times a step, but at the image's own size, which is what budgets follow); a repair adds a
# mask model's single pass. A description is one captioner pass: a tenth of a one-step image.
KIND_WEIGHTS = {
    JobKind.TEXT_TO_IMAGE: 1.0,
    JobKind.IMAGE_TO_IMAGE: 1.0,
    JobKind.UPSCALE: 0.5,
    JobKind.EXPLAIN: 1.0,
    JobKind.EDIT: 1.0,
    JobKind.REPAIR: 1.0,
    JobKind.DESCRIBE: 0.1,
}

# The error a repair ends with when its target is not in the image (the mask came out empty, or
# covering almost everything): "target not found: the car". The bot tells the member in its own words.
TARGET_NOT_FOUND = "target not found"


class PermanentJobError(Exception):
    """The job itself is at fault (bad parameters, an unreadable init image): another try fails the same way."""


class RetryableJobError(Exception):
    """The engine or its hardware failed (out of memory, a driver fault): another try may succeed."""


@dataclass(frozen=True)
class JobSpec:
    """Everything an engine needs to reproduce a job's images; serialisable as plain JSON."""

    kind: str
    member_prompt: str  # the member's own words, kept in the PNG's metadata
    model_prompt: str  # what the text encoder reads: the member's words plus the expansion
    negative_prompt: str
    model: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    count: int = 1
    scheduler: str | None = None
    strength: float | None = None
    init_image: str | None = None
    # Candidates drawn per requested image; the preference scorer keeps the best ``count`` of them.
    best_of: int = 1
    # Whether the engine's preference scorer scores (and orders) this job's images: a server can opt out.
    scoring: bool = True
    # Edits and repairs: how the instruction is carried out (mode, action, target, replacement, image
    # guidance, mask settings); plain JSON, stored with the job so it can be shown and reproduced.
    plan: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Jobs that agree on this can share one pipeline call."""
        return (
            self.kind,
            self.model,
            self.width,
            self.height,
            self.steps,
            self.guidance,
            self.scheduler,
            self.strength,
            # InstructPix2Pix takes one image guidance per call.
            (self.plan or {}).get("image_guidance"),
        )

    @property
    def seeds(self) -> list[int]:
        return [image_seed(self.seed, index) for index in range(self.count)]

    @property
    def compute_units(self) -> float:
        """Megapixels × steps × images × kind weight: what admins budget with."""
        weight = KIND_WEIGHTS.get(self.kind, 1.0)  # type: ignore[call-overload]
        # Every candidate of a best-of job is drawn, so every one is charged.
        images = self.count * max(1, self.best_of)
        return round(self.width * self.height / 1e6 * self.steps * images * weight, 4)


def image_seed(seed: int, index: int) -> int:
    """Image ``index`` of a grid uses the next seed, wrapping at 2**32, so any image of a grid can be
    reproduced alone."""
    return (seed + index) % SEED_LIMIT


@dataclass(frozen=True)
class QueuedJob:
    """A committed job as the bot hands it to a backend to carry to the engines."""

    id: str
    user_id: int
    spec: JobSpec
    attempts: int
    max_attempts: int
    created_at: datetime  # naive UTC (see utcnow)


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    user_id: int
    attempt: int
    max_attempts: int
    spec: JobSpec
    # Fencing token: a worker whose lease expired and was re-claimed can no longer complete the job.
    lease_token: str


@dataclass(frozen=True)
class GeneratedImage:
    index: int
    png: bytes
    width: int
    height: int
    nsfw_score: float | None = None
    seed: int | None = None  # the image's own seed (a best-of job keeps candidates out of seed order)
    score: float | None = None  # preference score from the engine's scorer; None when not scored
    alignment: float | None = None  # CLIP similarity of the image to the member's own words

    def meta(self) -> dict[str, Any]:
        """Everything but the pixels, as JSON: what a backend carries beside the PNG."""
        return {k: v for k, v in asdict(self).items() if k != "png"}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], png: bytes) -> GeneratedImage:
        return cls(png=png, **{k: meta[k] for k in cls.__dataclass_fields__ if k in meta and k != "png"})


@dataclass
class JobResult:
    images: list[GeneratedImage]
    gpu_seconds: float
    # Optional facts about the run, JSON only: "scorer" (the preference model that scored the images),
    # "candidates" (seed and score of every candidate of a best-of job) and "explanation" (an
    # explain job's words and whether the re-run reproduced the original).
    extra: dict[str, Any] = field(default_factory=dict)


class LeaseState(StrEnum):
    HELD = "held"
    LOST = "lost"
    CANCELLED = "cancelled"


def utcnow() -> datetime:
    """Naive UTC: SQLite compares datetimes as text, so every stored value must share one zone."""
    return datetime.now(UTC).replace(tzinfo=None)


class JobQueue(Protocol):
    """Transport between the bot and engines.

    The bot commits the job's row before ``publish``; the backend carries it to a worker and the outcome
    back. At-least-once execution, so ``complete`` and ``fail`` are fenced by the lease token and
    idempotent.
    """

    async def publish(self, job: QueuedJob) -> None: ...

    async def claim(self, worker_id: str, limit: int = 1, models: list[str] | None = None) -> list[ClaimedJob]: ...

    async def renew(self, job: ClaimedJob) -> LeaseState: ...

    async def complete(self, job: ClaimedJob, result: JobResult) -> bool: ...

    async def complete_many(self, results: list[tuple[ClaimedJob, JobResult]]) -> list[bool]:
        """``complete`` for each of a batch's jobs, in as few round trips as the backend allows."""
        ...

    async def fail(self, job: ClaimedJob, error: str, *, retryable: bool = True) -> str: ...

    async def release(self, job: ClaimedJob) -> None: ...

    async def cancel(self, job_id: str) -> str | None: ...

    async def heartbeat(self, worker_id: str, model: str) -> None: ...

    async def worker_stopped(self, worker_id: str) -> None: ...

    async def status(self) -> dict[str, Any]: ...

    async def live_workers(self, model: str) -> int: ...

    async def close(self) -> None: ...
