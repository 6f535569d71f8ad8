"""Text-to-image with a diffusers pipeline, loaded once per process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.contract import IMAGE_TO_IMAGE_KINDS, GeneratedImage, JobSpec, PermanentJobError
from engine.pngmeta import png_with_metadata

if TYPE_CHECKING:
    from engine.pipelines.previews import PreviewSink

log = logging.getLogger(__name__)


# What ``encode_prompt`` returns, in order: SD pipelines give the first two, SDXL all four.
_EMBEDDING_NAMES = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


class Interrupted(Exception):
    """The job was cancelled, or the worker lost its lease, between two denoising steps."""


@contextmanager
def _bad_arguments_are_permanent() -> Iterator[None]:
    """diffusers refuses arguments it cannot run (a size its VAE cannot tile, a bad strength) with
    ValueError or TypeError: the job's fault, and the same on every try. Everything else (out of
    memory, a driver fault) may pass and stays as raised."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise PermanentJobError(f"{type(error).__name__}: {error}") from error


@dataclass
class BatchOutput:
    images: list[list[GeneratedImage]]  # per job, in the order the jobs were given
    seconds: float
    # Per job, when the kind makes more than images (a caption, a mask): JobResult.extra.
    extras: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PipelineOptions:
    """How the loaded pipeline is prepared. The defaults suit a long-running engine."""

    # One small generation at load, so the first member's job does not pay for lazy initialisation
    # (CUDA context, kernel loading, allocator growth, a compiled graph).
    warmup: bool = True
    warmup_side: int = 64
    # Encode each distinct prompt once per batch. A grid repeats one prompt ``count`` times, and the text
    # encoder's cost grows with the batch, so shared prompts are common and worth sharing.
    share_prompt_embeddings: bool = True
    # Decode in overlapping tiles above this many pixels: the VAE's activation memory grows with the
    # image area and is what runs out first on large upscales. Tiles blend at their seams, so sizes
    # below this keep the exact single-pass decode.
    vae_tiling_above_pixels: int = 1024 * 1024
    # torch.compile the UNet (the part that runs once per step). Off by default: compilation takes
    # minutes and recompiles for new shapes. On the 2-core CPU with the tiny model it made the engine
    # about 15% faster for 121 s of warm-up, some 27,000 images to earn back. Turn it on where
    # `atelier bench engine --compile` shows the gain outweighing its warmup_s.
    compile_unet: bool = False
    compile_mode: str | None = "max-autotune-no-cudagraphs"
    # "eager" traces without generating code: what the CPU test of scripts/gpu-bench uses to keep the
    # compile path exercised in seconds rather than minutes.
    compile_backend: str = "inductor"
    # torchao weight-only quantization of the UNet and attention broadcast across steps: see
    # engine.pipelines.speedups for what applies to UNet models, and the README for their measured ratios.
    unet_quantization: str = "none"
    unet_cache: str = "none"


class TextToImage:
    """Owns one pipeline. ``generate`` blocks: the worker calls it in a thread."""

    def __init__(
        self,
        model: str,
        source: str | Any,
        *,
        device: str = "auto",
        dtype: str = "auto",
        options: PipelineOptions | None = None,
    ) -> None:
        """``source`` is what ``from_pretrained`` takes (hub id or directory), or an already built pipeline."""
        import torch

        from engine.pipelines.registry import pick_device

        self.model = model
        self.options = options or PipelineOptions()
        self.device, self.dtype = pick_device(device, dtype)
        self._torch = torch
        started = time.perf_counter()
        self.variant: str | None = None
        if isinstance(source, str):
            from diffusers import AutoPipelineForText2Image

            from engine.pipelines.registry import half_precision_variant

            if self.dtype in (torch.float16, torch.bfloat16):
                # The fp16 files are half the download and the disk of the full ones.
                self.variant = half_precision_variant(source)
            self.pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=self.dtype, variant=self.variant)
        else:
            self.pipe = source
        if self.pipe.dtype != self.dtype:
            self.pipe.to(dtype=self.dtype)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self._image_to_image: Any = None
        # TAESD previews of the image forming, when engine.pipelines.previews.attach_taesd set one up.
        self.previewer: Any = None
        self._prepare()
        log.info("loaded %s on %s (%s) in %.1fs", model, self.device, self.dtype, time.perf_counter() - started)
        self.warmup_seconds = self.warm_up() if self.options.warmup else 0.0

    def _prepare(self) -> None:
        attention = attention_processors(self.pipe)
        if attention - {"AttnProcessor2_0"}:
            # PyTorch's fused scaled_dot_product_attention is the diffusers default; anything else here
            # means a component was built or loaded with a slower processor.
            log.warning("attention processors other than SDPA in use: %s", sorted(attention))
        vae = getattr(self.pipe, "vae", None)
        if vae is not None and self.device.type == "cuda" and hasattr(vae, "enable_slicing"):
            # Decode a batch one image at a time: the decode's activation peak otherwise grows with the
            # batch and can fail a batch whose denoising already succeeded. Per-image decodes also give
            # exactly what a single-image call gives.
            vae.enable_slicing()
        if self.options.unet_quantization != "none" or self.options.unet_cache != "none":
            from engine.pipelines.speedups import apply_unet_speedups

            apply_unet_speedups(
                self.pipe.unet, quantization=self.options.unet_quantization, cache=self.options.unet_cache
            )
        if self.options.compile_unet:
            log.info("compiling the UNet (mode %s); the warm-up pays for it", self.options.compile_mode)
            mode = self.options.compile_mode if self.options.compile_backend == "inductor" else None
            self.pipe.unet.compile(mode=mode, backend=self.options.compile_backend)

    def warm_up(self, side: int | None = None, *, steps: int = 1) -> float:
        side = side or self.options.warmup_side
        started = time.perf_counter()
        params = JobSpec(
            kind="txt2img",
            member_prompt="warm-up",
            model_prompt="warm-up",
            negative_prompt="",
            model=self.model,
            width=side,
            height=side,
            steps=steps,
            guidance=0.0,
            seed=0,
        )
        self.generate([params])
        elapsed = time.perf_counter() - started
        log.info("warm-up at %dx%d took %.2fs", side, side, elapsed)
        return elapsed

    def image_to_image_pipe(self) -> Any:
        if self._image_to_image is None:
            from engine.pipelines.image_to_image import image_to_image_pipe

            self._image_to_image = image_to_image_pipe(self.pipe)
        return self._image_to_image

    def generate(
        self,
        jobs: Sequence[JobSpec],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_step: Callable[[int, int], None] | None = None,
        previews: PreviewSink | None = None,
    ) -> BatchOutput:
        """One pipeline call for jobs sharing a batch key; each image keeps its own seeded generator."""
        from engine.pipelines.previews import preview_hook

        first = jobs[0]
        prompts: list[str] = []
        negatives: list[str] = []
        generators = []
        for job in jobs:
            for seed in job.seeds:
                prompts.append(job.model_prompt)
                negatives.append(job.negative_prompt)
                # CPU generators give the same noise on every machine and for every batch size.
                generators.append(self._torch.Generator("cpu").manual_seed(seed))

        def step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            # Image-to-image runs only the tail of the schedule; the pipeline knows how many steps.
            total = getattr(pipe, "num_timesteps", None) or first.steps
            if preview is not None:
                preview(step + 1, total, callback_kwargs)
            if on_step is not None:
                on_step(step + 1, total)
            if should_stop():
                pipe._interrupt = True
            return callback_kwargs

        # Without a negative prompt the pipelines' own default applies (SDXL zeroes the unconditional
        # embedding rather than encoding an empty string).
        negative = negatives if any(negatives) else None
        started = time.perf_counter()
        # A fresh scheduler per call: schedulers keep per-run state (step index, sigmas).
        self.pipe.scheduler = self.pipe.scheduler.from_config(self.pipe.scheduler.config)
        self._set_vae_tiling(first.width * first.height)
        image_to_image_kind = first.kind in IMAGE_TO_IMAGE_KINDS
        scheduler = (self.image_to_image_pipe() if image_to_image_kind else self.pipe).scheduler
        with (
            self._torch.inference_mode(),
            _bad_arguments_are_permanent(),
            preview_hook(self.previewer, previews, scheduler, [job.count for job in jobs]) as preview,
        ):
            if image_to_image_kind:
                from engine.pipelines import image_to_image

                pil_images = image_to_image.run(
                    self.image_to_image_pipe(),
                    jobs,
                    prompts,
                    negative if first.guidance > 1.0 else None,
                    generators,
                    step_end,
                )
            else:
                pil_images = self._text_to_image(prompts, negative, generators, first, step_end)
        if should_stop():
            raise Interrupted
        elapsed = time.perf_counter() - started
        out: list[list[GeneratedImage]] = []
        images = iter(pil_images)
        sampler = type(self.pipe.scheduler).__name__
        for job in jobs:
            encoded = []
            for index, seed in enumerate(job.seeds):
                image = next(images)
                encoded.append(
                    GeneratedImage(
                        index, png_with_metadata(image, job, seed, sampler=sampler), image.width, image.height
                    )
                )
            out.append(encoded)
        return BatchOutput(out, elapsed)

    def _text_to_image(
        self,
        prompts: list[str],
        negatives: list[str] | None,
        generators: list[Any],
        first: JobSpec,
        step_end: Callable[..., dict[str, Any]],
    ) -> list[Any]:
        guided = self._classifier_free_guidance(first.guidance)
        embeddings = self.shared_prompt_embeddings(prompts, negatives, guided=guided)
        text: dict[str, Any] = embeddings or {"prompt": prompts, "negative_prompt": negatives if guided else None}
        result = self.pipe(
            **text,
            width=first.width,
            height=first.height,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            generator=generators,
            callback_on_step_end=step_end,
        )
        return list(result.images)

    def _classifier_free_guidance(self, guidance: float) -> bool:
        # The pipelines' own rule: guidance-distilled UNets (a time_cond_proj_dim) take it as an input instead.
        unet_config = getattr(getattr(self.pipe, "unet", None), "config", None)
        return guidance > 1.0 and getattr(unet_config, "time_cond_proj_dim", None) is None

    def shared_prompt_embeddings(
        self, prompts: list[str], negatives: list[str] | None, *, guided: bool
    ) -> dict[str, Any] | None:
        """Embeddings for every image, each distinct (prompt, negative) encoded once; None when nothing
        repeats (the pipeline then encodes as usual, at the same cost)."""
        if not self.options.share_prompt_embeddings or not hasattr(self.pipe, "encode_prompt"):
            return None
        negatives = negatives if guided else None
        pairs = list(zip(prompts, negatives or [None] * len(prompts), strict=True))
        distinct = list(dict.fromkeys(pairs))
        if len(distinct) == len(pairs):
            return None
        position = {pair: i for i, pair in enumerate(distinct)}
        encoded = self.pipe.encode_prompt(
            prompt=[prompt for prompt, _ in distinct],
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=[negative for _, negative in distinct] if negatives is not None else None,
        )
        embeddings: dict[str, Any] = {}
        for name, tensor in zip(_EMBEDDING_NAMES, encoded, strict=False):
            if tensor is None:
                continue
            index = self._torch.tensor([position[pair] for pair in pairs], device=tensor.device)
            embeddings[name] = tensor.index_select(0, index)
        return embeddings

    def _set_vae_tiling(self, pixels: int) -> None:
        vae = getattr(self.pipe, "vae", None)
        if vae is None or not hasattr(vae, "enable_tiling"):
            return
        if pixels > self.options.vae_tiling_above_pixels:
            vae.enable_tiling()
        else:
            vae.disable_tiling()


def attention_processors(pipe: Any) -> set[str]:
    """Names of the attention processor classes used by the pipeline's diffusers models."""
    names: set[str] = set()
    for component in ("unet", "vae"):
        module = getattr(pipe, component, None)
        processors = getattr(module, "attn_processors", None)
        if processors:
            names.update(type(processor).__name__ for processor in processors.values())
    return names
