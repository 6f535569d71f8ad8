"""Live previews and the optional fast final decode, both with TAESD (diffusers ``AutoencoderTiny``).

TAESD is a distilled decoder for the Stable Diffusion latent spaces, two orders of magnitude cheaper
than the full VAE: cheap enough to show a member the image forming in their progress message every few
steps, and, where an admin accepts its softer detail, to decode the final image (`atelier bench taesd`
measures both the time and the PSNR between the two decodes).

A preview shows the model's current estimate of the finished image (the scheduler's
``pred_original_sample``), not the noisy latents of the step: those are mostly noise until the last
steps, the estimate has the composition from the first.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

# madebyollin's TAESD decoders for the two latent spaces Atelier's models use.
TAESD_SD = "madebyollin/taesd"
TAESD_SDXL = "madebyollin/taesdxl"
TINY_TAESD = "tiny"


class PreviewSink(Protocol):
    """Where a generation sends its previews (the engine worker's progress reporter)."""

    def wants_preview(self, step: int, total: int) -> bool:
        """Asked before decoding, so that a preview nobody will see costs nothing."""
        ...

    def on_preview(self, step: int, total: int, images: list[bytes]) -> None:
        """One encoded preview per job of the batch, in the jobs' order (called from the compute thread);
        a grid's preview is a contact sheet of its images, laid out as the result will be."""
        ...


def taesd_for(pipe: Any) -> str:
    """The TAESD matching a pipeline's latent space: SDXL pipelines have a second text encoder."""
    return TAESD_SDXL if getattr(pipe, "text_encoder_2", None) is not None else TAESD_SD


def load_taesd(source: str, *, device: Any, dtype: Any) -> Any:
    """An AutoencoderTiny from a hub id or a directory, on the pipeline's device and dtype."""
    from diffusers import AutoencoderTiny

    started = time.perf_counter()
    model = AutoencoderTiny.from_pretrained(source, torch_dtype=dtype)
    model.to(device)
    model.eval()
    log.info("loaded TAESD %s in %.1fs", source, time.perf_counter() - started)
    return model


@dataclass(frozen=True)
class PreviewOptions:
    # A preview at most every this many steps (and the worker sends at most one per progress interval).
    every_steps: int = 2
    # Longest side of the preview picture: a progress message needs no more, and a small JPEG uploads fast.
    max_side: int = 256
    jpeg_quality: int = 70


class LatentPreviewer:
    """Decodes a batch's current estimate with TAESD into small JPEGs, one per job."""

    def __init__(self, taesd: Any, options: PreviewOptions | None = None) -> None:
        self.taesd = taesd
        self.options = options or PreviewOptions()
        self.decode_seconds = 0.0
        self.decoded = 0

    def due(self, step: int, total: int) -> bool:
        # The last step needs no preview: the finished image follows at once.
        return step < total and step % max(1, self.options.every_steps) == 0

    def decode(self, latents: Any) -> list[Any]:
        """PIL images from latents in the UNet's (scaled) space: what TAESD was trained on."""
        import torch
        from PIL import Image

        started = time.perf_counter()
        with torch.inference_mode():
            latents = latents.to(device=self.taesd.device, dtype=self.taesd.dtype)
            sample = self.taesd.decode(latents / self.taesd.config.scaling_factor).sample
            pixels = ((sample.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            arrays = pixels.permute(0, 2, 3, 1).cpu().numpy()
        self.decode_seconds += time.perf_counter() - started
        self.decoded += len(arrays)
        return [Image.fromarray(array) for array in arrays]

    def jpeg(self, images: list[Any]) -> bytes:
        image = contact_sheet(images)
        image.thumbnail((self.options.max_side, self.options.max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.options.jpeg_quality)
        return buffer.getvalue()


class _EstimateTap:
    """Keeps the ``pred_original_sample`` of the scheduler's last step while the call runs. The
    wrapper lives on the instance and is removed afterwards, so wrappers never pile up on a scheduler
    that outlives the call (the image-to-image pipeline keeps its own)."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.estimate: Any = None

    def __enter__(self) -> _EstimateTap:
        step = self.scheduler.step

        def tapped(*args: Any, **kwargs: Any) -> Any:
            output = step(*args, **kwargs)
            self.estimate = getattr(output, "pred_original_sample", None)
            return output

        self.scheduler.step = tapped
        return self

    def __exit__(self, *exc: object) -> None:
        del self.scheduler.step  # the class's own method again


StepHook = Callable[[int, int, dict[str, Any]], None]


@contextmanager
def preview_hook(
    previewer: LatentPreviewer | None,
    sink: PreviewSink | None,
    scheduler: Any,
    counts: Sequence[int],
) -> Iterator[StepHook | None]:
    """What the pipeline's step callback calls while a generation runs: decode the batch when a preview
    is due and wanted, one picture per job (``counts``: each job's images, in batch order). None when
    there is no previewer or nobody to send previews to."""
    if previewer is None or sink is None:
        yield None
        return
    with _EstimateTap(scheduler) as tap:

        def hook(step: int, total: int, callback_kwargs: dict[str, Any]) -> None:
            if not previewer.due(step, total) or not sink.wants_preview(step, total):
                return
            # Schedulers without an estimate (multistep solvers) preview the step's latents instead.
            latents = tap.estimate if tap.estimate is not None else callback_kwargs.get("latents")
            if latents is None:
                return
            try:
                pictures = previewer.decode(latents)
                starts = [sum(counts[:i]) for i in range(len(counts))]
                sheets = [previewer.jpeg(pictures[start : start + n]) for start, n in zip(starts, counts, strict=True)]
                sink.on_preview(step, total, sheets)
            except Exception:
                # A preview is a courtesy: it must never fail the member's image.
                log.warning("preview decode failed; the job goes on without it", exc_info=True)

        yield hook


def contact_sheet(images: list[Any]) -> Any:
    """A job's images side by side, two columns from three images on: the result's own layout."""
    from PIL import Image

    if len(images) == 1:
        return images[0].copy()
    width, height = images[0].size
    columns = 2 if len(images) > 2 else len(images)
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (width * columns, height * rows))
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * width, (i // columns) * height))
    return sheet


def use_taesd_for_final_decode(pipe: Any, taesd: Any) -> None:
    """Swap the pipeline's VAE for TAESD (diffusers' documented drop-in: AutoencoderTiny has a
    scaling factor of 1 and decodes the scaled latents the pipelines pass it)."""
    if taesd.device.type == "cuda":
        taesd.enable_slicing()  # as the full VAE: a batch's decode peak does not grow with the batch
    pipe.vae = taesd


def psnr(a: Any, b: Any) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images of one size (inf when identical)."""
    import numpy as np

    error = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def resolve_taesd(preview_model: str | None, pipe: Any, models_dir: Any, *, tiny: bool) -> str:
    """The hub id or directory of the TAESD to load: the configured one, else the one matching the
    pipeline's latent space; the offline tiny one for the tiny model."""
    if tiny or preview_model == TINY_TAESD:
        from engine.tiny import build_tiny_taesd

        return str(build_tiny_taesd(models_dir / "tiny-taesd"))
    return preview_model or taesd_for(pipe)


def attach_taesd(
    pipeline: Any,
    source: str,
    *,
    previews: bool,
    fast_decode: bool,
    options: PreviewOptions | None = None,
) -> None:
    """Load TAESD once and give it to a TextToImage: as its previewer, as its final decoder, or both."""
    if not previews and not fast_decode:
        return
    try:
        taesd = load_taesd(source, device=pipeline.device, dtype=pipeline.dtype)
    except Exception as error:
        if fast_decode:
            # Asked for explicitly: an engine decoding differently than configured would be worse.
            from engine.config import ConfigError

            raise ConfigError(f"ATELIER_FAST_DECODE: cannot load TAESD {source!r}: {error}") from None
        # Previews are a courtesy: an engine that cannot fetch TAESD still makes images.
        log.warning("live previews are off: TAESD %s could not be loaded (%s)", source, error)
        return
    if previews:
        pipeline.previewer = LatentPreviewer(taesd, options)
    if fast_decode:
        use_taesd_for_final_decode(pipeline.pipe, taesd)
        log.info("final images are decoded with TAESD %s (ATELIER_FAST_DECODE)", source)
