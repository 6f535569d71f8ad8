"""What an explanation says about a result without any model: whose words, what was added and by
what, which check fired, the seed, model and variant, the score and the rank in the grid. The
heatmaps come from the engine (engine/explain.py), which re-runs the image."""

from __future__ import annotations

from typing import Any

from bot.errors import InvalidRequest
from bot.services.records import JobRecord
from engine.contract import JobSpec, JobStatus


def _chosen_image(job: JobRecord, index: int):  # type: ignore[no-untyped-def]
    if job.status != JobStatus.SUCCEEDED or not job.images:
        raise InvalidRequest("explain.not_ready", job_id=job.id)
    if not 0 <= index < len(job.images):
        raise InvalidRequest("explain.no_such_image", job_id=job.id, high=len(job.images) - 1, got=index)
    return job.images[index]


def added_text(job: JobRecord) -> str:
    """What the expansion appended after the member's words (they lead the model prompt verbatim)."""
    member = job.member_prompt.strip()
    if job.model_prompt.startswith(member):
        return job.model_prompt[len(member) :].lstrip(" ,")
    return job.model_prompt if job.expansion_source not in ("raw", "parent") else ""


def provenance(job: JobRecord, index: int = 0) -> dict[str, Any]:
    image = _chosen_image(job, index)
    return {
        "job_id": job.id,
        "index": index,
        "expansion": {
            "member_prompt": job.member_prompt,
            "model_prompt": job.model_prompt,
            "added": added_text(job),
            "source": job.expansion_source,
            "style": job.style,
            "guard": job.expansion_guard,
            "variant": job.variant,
        },
        "seed": image.seed,
        "model": job.model,
        "score": image.score,
        "alignment": image.alignment,
        "scorer": job.scorer,
        # The grid is stored in score order, so an image's place is its rank (when it was scored).
        "rank": index + 1 if image.score is not None else None,
        "of": len(job.images),
        "best_of": job.best_of,
    }


def explain_spec(job: JobRecord, index: int = 0) -> JobSpec:
    """The job as it drew image ``index``: one image, that image's own seed."""
    image = _chosen_image(job, index)
    return JobSpec(
        kind=job.kind,
        member_prompt=job.member_prompt,
        model_prompt=job.model_prompt,
        negative_prompt=job.negative_prompt,
        model=job.model,
        width=job.width,
        height=job.height,
        steps=job.steps,
        guidance=job.guidance,
        seed=image.seed,
        count=1,
        scheduler=job.scheduler,
        strength=job.strength,
        init_image=job.init_image,
        best_of=1,
        scoring=False,
    )
