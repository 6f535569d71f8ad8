"""Edits, repairs and descriptions next to generation: one pipeline object for the worker, which
hands each kind to its own pipeline. The models behind them load on the first job that needs them,
so an engine that only ever draws never pays their memory."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.contract import EDIT_KINDS, GeneratedImage, JobKind, JobSpec
from engine.pipelines.text_to_image import BatchOutput, Interrupted, _bad_arguments_are_permanent
from engine.pngmeta import png_with_metadata

log = logging.getLogger(__name__)

TASK_KINDS = EDIT_KINDS | {JobKind.DESCRIBE}


@dataclass(frozen=True)
class TaskModels:
    """Where each task's model comes from (hub ids or directories); ``inpaint`` None reuses the
    configured image model's own weights."""

    edit: str
    mask: str
    caption: str
    inpaint: str | None = None


def task_models(settings: Any) -> TaskModels:
    """The configured models, or the offline tiny ones (built here on first use) with --tiny."""
    from engine.pipelines.registry import resolve_task_model

    models_dir: Path = settings.models_dir
    return TaskModels(
        edit=resolve_task_model("edit", settings.edit_model, models_dir, tiny=settings.tiny),
        mask=resolve_task_model("mask", settings.mask_model, models_dir, tiny=settings.tiny),
        caption=resolve_task_model("caption", settings.caption_model, models_dir, tiny=settings.tiny),
        inpaint=resolve_task_model("inpaint", settings.inpaint_model, models_dir, tiny=settings.tiny),
    )


class ImageTasks:
    """Wraps the text-to-image pipeline (``base``); jobs of the other kinds go to their own pipeline."""

    def __init__(self, base: Any, models: TaskModels) -> None:
        import torch

        self.base = base
        self.model = base.model
        self.models = models
        self._torch = torch
        self._lock = threading.Lock()
        self._edit: Any = None
        self._repair: Any = None
        self._captioner: Any = None

    def __getattr__(self, name: str) -> Any:
        # Everything else is the text-to-image pipeline's (its diffusers pipe, device, options, warm-up).
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    # Loaded on the compute thread, on first use.
    def edit_pipeline(self) -> Any:
        with self._lock:
            if self._edit is None:
                from engine.pipelines.instruct_edit import InstructEdit

                self._edit = InstructEdit(self.models.edit, device=self.base.device, dtype=self.base.dtype)
            return self._edit

    def repair_pipeline(self) -> Any:
        with self._lock:
            if self._repair is None:
                from engine.pipelines.masks import TextMasker
                from engine.pipelines.region_repair import RegionRepair, inpainting_pipe_from, load_inpainting_pipe

                masker = TextMasker(self.models.mask, device=self.base.device)
                if self.models.inpaint:
                    inpaint = load_inpainting_pipe(self.models.inpaint, device=self.base.device, dtype=self.base.dtype)
                else:
                    inpaint = inpainting_pipe_from(self.base.pipe)
                self._repair = RegionRepair(masker, inpaint)
            return self._repair

    def captioner(self) -> Any:
        with self._lock:
            if self._captioner is None:
                from engine.pipelines.describe import Captioner

                self._captioner = Captioner(self.models.caption, device=self.base.device)
            return self._captioner

    def generate(
        self,
        jobs: Sequence[JobSpec],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_step: Callable[[int, int], None] | None = None,
        previews: Any = None,
    ) -> BatchOutput:
        """``previews``: live previews of text-to-image jobs; edits and descriptions show none."""
        first = jobs[0]
        if first.kind not in TASK_KINDS:
            return self.base.generate(jobs, should_stop=should_stop, on_step=on_step, previews=previews)
        started = time.perf_counter()
        if first.kind == JobKind.DESCRIBE:
            with self._torch.inference_mode(), _bad_arguments_are_permanent():
                captions = self.captioner().captions(jobs)
            return BatchOutput(
                [[] for _ in jobs], time.perf_counter() - started, [{"caption": caption} for caption in captions]
            )
        generators = [self._torch.Generator("cpu").manual_seed(seed) for job in jobs for seed in job.seeds]

        def step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(step + 1, getattr(pipe, "num_timesteps", None) or first.steps)
            if should_stop():
                pipe._interrupt = True
            return callback_kwargs

        task = self.edit_pipeline() if first.kind == JobKind.EDIT else self.repair_pipeline()
        with self._torch.inference_mode(), _bad_arguments_are_permanent():
            if first.kind == JobKind.EDIT:
                pil_images, _ = task.run(jobs, generators, step_end)
                extras: list[dict[str, Any]] = [{} for _ in jobs]
            else:
                pil_images, extras = task.run(jobs, generators, step_end)
        if should_stop():
            raise Interrupted
        out: list[list[GeneratedImage]] = []
        images = iter(pil_images)
        sampler = type(task.pipe.scheduler).__name__
        for job in jobs:
            encoded = []
            # The file records what was asked and how it was carried out, to reproduce it from the file.
            record = {"kind": job.kind, "instruction": job.member_prompt, "strength": job.strength, "plan": job.plan}
            for index, seed in enumerate(job.seeds):
                image = next(images)
                png = png_with_metadata(image, job, seed, sampler=sampler, **record)
                encoded.append(GeneratedImage(index, png, image.width, image.height))
            out.append(encoded)
        return BatchOutput(out, time.perf_counter() - started, extras)
