"""What the bot and the engine agree on, whatever carries the jobs between them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol


@dataclass(frozen=True)
class JobParams:
    """Everything a worker needs to reproduce a job's images; serialisable as plain JSON."""

    kind: str
    prompt: str  # what the model sees: the expanded prompt
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
    member_prompt: str = ""  # what the member typed, kept in the PNG's metadata

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobParams:
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
        )


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    user_id: int
    attempt: int
    max_attempts: int
    params: JobParams
    # Fencing token: a worker whose lease expired and was re-claimed can no longer complete the job.
    lease_token: str


@dataclass(frozen=True)
class GeneratedImage:
    index: int
    png: bytes
    width: int
    height: int
    nsfw_score: float | None = None


@dataclass
class JobResult:
    images: list[GeneratedImage]
    gpu_seconds: float
    compute_units: float
    extra: dict[str, Any] = field(default_factory=dict)


class LeaseState(StrEnum):
    HELD = "held"
    LOST = "lost"
    CANCELLED = "cancelled"


class JobQueue(Protocol):
    """Transport between the bot and engines.

    The database row of a job is written by the bot before ``publish``; the backend only carries it
    to a worker and carries the outcome back. At-least-once execution, so ``complete`` and ``fail``
    are fenced by the lease token and idempotent.
    """

    async def publish(self, job_id: str) -> None: ...

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
