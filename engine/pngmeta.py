"""What a saved PNG says about itself: the A1111 ``parameters`` text that other tools (web UIs, image
browsers, civitai) read, and Atelier's full record as JSON in a chunk of its own."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL.PngImagePlugin import PngInfo

from engine.contract import JobSpec

ATELIER_CHUNK = "atelier"
# zlib's fastest level for every image an engine writes: the same pixels (PNG is lossless) in about half
# the time, for a file about an eighth larger (`atelier bench sheet`, its image rows). The encoding runs
# on the compute thread after each batch, so at level 6, Pillow's default, the accelerator waited
# through it and the member's image with it.
PNG_COMPRESS_LEVEL = 1
# diffusers scheduler classes by the sampler names A1111 writes.
SAMPLERS = {
    "EulerAncestralDiscreteScheduler": "Euler a",
    "EulerDiscreteScheduler": "Euler",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
}


def a1111_parameters(params: JobSpec, seed: int, sampler: str) -> str:
    """The three-part text A1111 writes: the prompt the encoder read, ``Negative prompt:``, then settings."""
    lines = [params.model_prompt]
    if params.negative_prompt:
        lines.append(f"Negative prompt: {params.negative_prompt}")
    settings = {
        "Steps": params.steps,
        "Sampler": SAMPLERS.get(sampler, sampler),
        "CFG scale": f"{params.guidance:g}",
        "Seed": seed,
        "Size": f"{params.width}x{params.height}",
        "Model": params.model,
    }
    lines.append(", ".join(f"{name}: {value}" for name, value in settings.items()))
    return "\n".join(lines)


def png_with_metadata(
    image: Any,
    params: JobSpec,
    seed: int,
    *,
    sampler: str = "",
    compress_level: int = PNG_COMPRESS_LEVEL,
    **extra: Any,
) -> bytes:
    """``extra``: what a job kind adds to Atelier's record (an edit's instruction, say)."""
    record = {
        "member_prompt": params.member_prompt,
        "model_prompt": params.model_prompt,
        "negative_prompt": params.negative_prompt,
        "seed": seed,
        "steps": params.steps,
        "guidance": params.guidance,
        "width": params.width,
        "height": params.height,
        "model": params.model,
        "scheduler": params.scheduler or sampler or None,
        **extra,
    }
    info = PngInfo()
    info.add_text("parameters", a1111_parameters(params, seed, sampler))
    # iTXt: UTF-8 whatever the language of the prompt (tEXt is Latin-1 only).
    info.add_itxt(ATELIER_CHUNK, json.dumps(record, ensure_ascii=False))
    info.add_text("Software", "Atelier")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()


def atelier_record(png_text: dict[str, str]) -> dict[str, Any]:
    """Atelier's record from a PIL image's ``.text``."""
    return json.loads(png_text[ATELIER_CHUNK])
