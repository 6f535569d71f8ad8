"""Text-to-image with a diffusers pipeline, loaded once per process."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.queue.protocol import GeneratedImage, JobParams

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """The job was cancelled, or the worker lost its lease, between two denoising steps."""


def image_seeds(params: JobParams) -> list[int]:
    # Image i of a grid uses seed + i, so any single image of a grid can be reproduced alone.
    return [(params.seed + i) % 2**32 for i in range(params.count)]


def png_with_metadata(image: Any, params: JobParams, seed: int) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    metadata = {
        "prompt": params.member_prompt or params.prompt,
        "expanded_prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "seed": seed,
        "steps": params.steps,
        "guidance": params.guidance,
        "width": params.width,
        "height": params.height,
        "model": params.model,
        "scheduler": params.scheduler,
    }
    info.add_text("parameters", json.dumps(metadata, ensure_ascii=False))
    info.add_text("Software", "Atelier")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@dataclass
class BatchOutput:
    images: list[list[GeneratedImage]]  # per job, in the order the jobs were given
    seconds: float


class TextToImage:
    """Owns one pipeline. ``generate`` blocks: the worker calls it in a thread."""

    def __init__(self, model: str, source: str, *, device: str = "auto", dtype: str = "auto") -> None:
        import torch
        from diffusers import AutoPipelineForText2Image

        from engine.pipelines.registry import pick_device

        self.model = model
        self.device, self.dtype = pick_device(device, dtype)
        started = time.perf_counter()
        self.pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=self.dtype)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self._torch = torch
        log.info("loaded %s on %s (%s) in %.1fs", model, self.device, self.dtype, time.perf_counter() - started)

    def generate(
        self,
        jobs: Sequence[JobParams],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_step: Callable[[int, int], None] | None = None,
    ) -> BatchOutput:
        """One pipeline call for jobs sharing a batch key; each image keeps its own seeded generator."""
        first = jobs[0]
        prompts: list[str] = []
        negatives: list[str] = []
        generators = []
        for job in jobs:
            for seed in image_seeds(job):
                prompts.append(job.prompt)
                negatives.append(job.negative_prompt)
                # CPU generators give the same noise on every machine and for every batch size.
                generators.append(self._torch.Generator("cpu").manual_seed(seed))

        def step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(step + 1, first.steps)
            if should_stop():
                pipe._interrupt = True
            return callback_kwargs

        started = time.perf_counter()
        # A fresh scheduler per call: schedulers keep per-run state (step index, sigmas).
        self.pipe.scheduler = self.pipe.scheduler.from_config(self.pipe.scheduler.config)
        with self._torch.inference_mode():
            result = self.pipe(
                prompt=prompts,
                negative_prompt=negatives if first.guidance > 1.0 else None,
                width=first.width,
                height=first.height,
                num_inference_steps=first.steps,
                guidance_scale=first.guidance,
                generator=generators,
                callback_on_step_end=step_end,
            )
        if should_stop():
            raise Interrupted
        elapsed = time.perf_counter() - started
        out: list[list[GeneratedImage]] = []
        pil_images = iter(result.images)
        for job in jobs:
            images = []
            for index, seed in enumerate(image_seeds(job)):
                image = next(pil_images)
                images.append(GeneratedImage(index, png_with_metadata(image, job, seed), image.width, image.height))
            out.append(images)
        return BatchOutput(out, elapsed)
