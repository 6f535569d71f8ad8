"""Region repair: a region named in words is found (CLIPSeg), redrawn by an inpainting pipeline, and
the source's own pixels are put back everywhere else, so nothing outside the mask changes."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from engine.contract import TARGET_NOT_FOUND, JobSpec, PermanentJobError
from engine.pipelines.image_to_image import load_init_image
from engine.pipelines.masks import Mask, MaskSettings, TextMasker, composite, post_process

log = logging.getLogger(__name__)


def inpainting_pipe_from(text_pipe: Any) -> Any:
    """The configured model's own inpainting pipeline, sharing its loaded weights (a 4-channel UNet
    inpaints by blending latents with the mask at every step)."""
    from diffusers import AutoPipelineForInpainting

    pipe = AutoPipelineForInpainting.from_pipe(text_pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_inpainting_pipe(source: str, *, device: Any, dtype: Any) -> Any:
    """A dedicated inpainting model (a 9-channel UNet: latents, mask, masked image)."""
    from diffusers import AutoPipelineForInpainting

    from engine.pipelines.registry import variant_for

    pipe = AutoPipelineForInpainting.from_pretrained(source, dtype=dtype, variant=variant_for(source, dtype))
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded the inpainting model %s", source)
    return pipe


class RegionRepair:
    def __init__(self, masker: TextMasker, inpaint: Any) -> None:
        self.masker = masker
        self.pipe = inpaint

    def masks(self, jobs: Sequence[JobSpec], sources: list[Image.Image]) -> list[Mask]:
        """One mask per job; a target that is not there fails that job (and only it: the worker runs
        a failed batch's jobs one by one)."""
        targets = [str((job.plan or {}).get("target") or job.model_prompt) for job in jobs]
        maps = self.masker.probabilities(sources, targets)
        masks = []
        for job, source, target, probabilities in zip(jobs, sources, targets, maps, strict=True):
            settings = MaskSettings.from_plan(job.plan or {})
            mask = post_process(probabilities, source.size, settings)
            log.info("mask for %r covers %.1f%% of the image", target, mask.coverage * 100)
            if not mask.found(settings):
                raise PermanentJobError(f"{TARGET_NOT_FOUND}: {target}")
            masks.append(mask)
        return masks

    def run(
        self,
        jobs: Sequence[JobSpec],
        generators: list[Any],
        callback: Callable[..., dict[str, Any]],
    ) -> tuple[list[Image.Image], list[dict[str, Any]]]:
        first = jobs[0]
        sources = [load_init_image(job) for job in jobs]
        masks = self.masks(jobs, sources)
        expanded_sources = [source for job, source in zip(jobs, sources, strict=True) for _ in range(job.count)]
        expanded_masks = [mask.soft for job, mask in zip(jobs, masks, strict=True) for _ in range(job.count)]
        prompts = [job.model_prompt for job in jobs for _ in range(job.count)]
        negatives = [job.negative_prompt for job in jobs for _ in range(job.count)]
        result = self.pipe(
            prompt=prompts,
            negative_prompt=negatives if first.guidance > 1.0 and any(negatives) else None,
            image=expanded_sources,
            mask_image=expanded_masks,
            width=first.width,
            height=first.height,
            strength=first.strength if first.strength is not None else 1.0,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            generator=generators,
            callback_on_step_end=callback,
        )
        images = [
            composite(source, generated, mask)
            for source, generated, mask in zip(expanded_sources, result.images, expanded_masks, strict=True)
        ]
        extras = [{"mask_png": _png_base64(mask.soft), "mask_coverage": round(mask.coverage, 4)} for mask in masks]
        return images, extras


def _png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
