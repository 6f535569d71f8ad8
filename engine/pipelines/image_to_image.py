"""Image-to-image: variations, restyles and the enhance pass of an upscale, sharing the loaded weights."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from PIL import Image, UnidentifiedImageError

from engine.contract import JobSpec, PermanentJobError

log = logging.getLogger(__name__)

DEFAULT_STRENGTH = {"img2img": 0.6, "upscale": 0.3}


def load_init_image(params: JobSpec) -> Image.Image:
    """The source image at the job's size. An upscale enlarges with Lanczos first, then the model
    re-draws fine detail at low strength (a "hires fix"), so no second model is needed."""
    if not params.init_image:
        raise PermanentJobError(f"a {params.kind} job needs a source image")
    try:
        with Image.open(params.init_image) as source:
            image = source.convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError) as error:
        raise PermanentJobError(f"the source image cannot be read: {error}") from error
    if image.size != (params.width, params.height):
        image = image.resize((params.width, params.height), Image.Resampling.LANCZOS)
    return image


def effective_steps(params: JobSpec) -> tuple[int, float]:
    """diffusers runs ``int(steps × strength)`` steps; ask for enough that the job gets the steps it names."""
    strength = params.strength if params.strength is not None else DEFAULT_STRENGTH.get(params.kind, 0.6)
    return max(params.steps, math.ceil(params.steps / strength)), strength


def image_to_image_pipe(text_pipe: Any) -> Any:
    from diffusers import AutoPipelineForImage2Image

    # from_pipe reuses the already-loaded modules: no second copy of the weights in memory.
    pipe = AutoPipelineForImage2Image.from_pipe(text_pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(
    pipe: Any,
    jobs: Sequence[JobSpec],
    prompts: list[str],
    negatives: list[str] | None,
    generators: list[Any],
    callback: Any,
) -> list[Image.Image]:
    first = jobs[0]
    steps, strength = effective_steps(first)
    images = [load_init_image(job) for job in jobs for _ in range(job.count)]
    result = pipe(
        prompt=prompts,
        negative_prompt=negatives,
        image=images,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=first.guidance,
        generator=generators,
        callback_on_step_end=callback,
    )
    return list(result.images)
