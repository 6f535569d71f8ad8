"""What a job costs, in the units admins budget with. Torch-free: the bot reserves with it."""

from __future__ import annotations

from engine.queue.protocol import JobParams

# Relative to text-to-image at the same size and steps. An upscale runs a light pass over a known
# image; a variation is a full image-to-image pass.
KIND_WEIGHTS = {"txt2img": 1.0, "img2img": 1.0, "upscale": 0.5}


def compute_units(params: JobParams) -> float:
    """Megapixels × steps × images × kind weight."""
    weight = KIND_WEIGHTS.get(params.kind, 1.0)
    return round(params.width * params.height / 1e6 * params.steps * params.count * weight, 4)
