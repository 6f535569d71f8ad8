"""Instruction edits: the whole picture changes as the member asked (InstructPix2Pix by default)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from engine.contract import JobSpec
from engine.pipelines.image_to_image import load_init_image

log = logging.getLogger(__name__)

DEFAULT_IMAGE_GUIDANCE = 1.5


class InstructEdit:
    """Owns the editing pipeline. ``timbrooks/instruct-pix2pix`` loads as
    StableDiffusionInstructPix2PixPipeline; a larger editing model (FluxKontextPipeline,
    QwenImageEditPipeline) loads through the same ``DiffusionPipeline.from_pretrained`` by its own
    model_index.json, and is called with the arguments it accepts."""

    def __init__(self, source: str, *, device: Any, dtype: Any) -> None:
        from diffusers import DiffusionPipeline

        from engine.pipelines.registry import variant_for

        self.pipe = DiffusionPipeline.from_pretrained(source, dtype=dtype, variant=variant_for(source, dtype))
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self._accepts = set(inspect.signature(self.pipe.__call__).parameters)
        log.info("loaded the edit model %s (%s)", source, type(self.pipe).__name__)

    def run(
        self,
        jobs: Sequence[JobSpec],
        generators: list[Any],
        callback: Callable[..., dict[str, Any]],
    ) -> tuple[list[Image.Image], list[Image.Image]]:
        """The edited images (at the sources' size) and the sources they were made from."""
        first = jobs[0]
        sources = [load_init_image(job) for job in jobs for _ in range(job.count)]
        prompts = [job.model_prompt for job in jobs for _ in range(job.count)]
        options: dict[str, Any] = {
            "prompt": prompts,
            "image": sources,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "generator": generators,
            "callback_on_step_end": callback,
        }
        if "image_guidance_scale" in self._accepts:
            options["image_guidance_scale"] = float((first.plan or {}).get("image_guidance", DEFAULT_IMAGE_GUIDANCE))
        if "width" in self._accepts:  # editing models that do not follow the input's size by themselves
            options.update(width=first.width, height=first.height)
        options = {key: value for key, value in options.items() if key in self._accepts}
        images = list(self.pipe(**options).images)
        return [_at_size(image, first) for image in images], sources


def _at_size(image: Image.Image, job: JobSpec) -> Image.Image:
    # The output has the source's size, whatever the model's own rounding.
    if image.size != (job.width, job.height):
        return image.resize((job.width, job.height), Image.Resampling.LANCZOS)
    return image
