"""Masks from words (CLIPSeg), their post-processing, and putting the source's pixels back outside them.

The post-processing and the compositing are plain functions of arrays and images, so they are tested
without a model: a probability map becomes a mask in three steps, each with a reason:

- threshold: CLIPSeg's sigmoid output is a soft guess; below the threshold a pixel is not the target;
- dilate: the guess hugs the object's core, and an inpainting model given only the core leaves a halo
  of the old object around the new one; a few pixels more cover its edges and shadow;
- feather: a hard edge shows as a seam once the source is pasted back; a blurred edge blends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskSettings:
    threshold: float = 0.4
    dilate_px: int = 8
    feather_px: int = 6
    # Below this share of the image the target was not found; above the other, "the car" is the whole
    # picture, which is not a region repair but an edit of everything (or a model that saw nothing).
    min_coverage: float = 0.002
    max_coverage: float = 0.95

    @classmethod
    def from_plan(cls, plan: dict[str, Any]) -> MaskSettings:
        mask = plan.get("mask") or {}
        known = cls.__dataclass_fields__
        return cls(**{key: value for key, value in mask.items() if key in known})


@dataclass(frozen=True)
class Mask:
    """``soft`` (L mode, 0–255, feathered) weights the generated pixels when compositing; ``coverage``
    is the share of pixels over the threshold, before dilation."""

    soft: Image.Image
    coverage: float

    def found(self, settings: MaskSettings) -> bool:
        return settings.min_coverage <= self.coverage <= settings.max_coverage


def dilate(binary: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by ``radius`` pixels (a square structuring element: a max filter along the
    rows, then along the columns, each as ``radius`` shifted maxima)."""
    if radius <= 0:
        return binary.copy()
    out = binary.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            forward = np.zeros_like(out)
            backward = np.zeros_like(out)
            if axis == 0:
                forward[shift:] = out[:-shift]
                backward[:-shift] = out[shift:]
            else:
                forward[:, shift:] = out[:, :-shift]
                backward[:, :-shift] = out[:, shift:]
            grown |= forward | backward
        out = grown
    return out


def post_process(probabilities: np.ndarray, size: tuple[int, int], settings: MaskSettings) -> Mask:
    """A probability map (any resolution, values 0–1) → the image-sized soft mask and its coverage."""
    heat = Image.fromarray(np.clip(probabilities * 255.0, 0, 255).astype(np.uint8), mode="L")
    heat = heat.resize(size, Image.Resampling.BILINEAR)
    binary = np.asarray(heat, dtype=np.float32) / 255.0 >= settings.threshold
    coverage = float(binary.mean())
    grown = dilate(binary, settings.dilate_px)
    soft = Image.fromarray(grown.astype(np.uint8) * 255, mode="L")
    if settings.feather_px > 0:
        soft = soft.filter(ImageFilter.GaussianBlur(settings.feather_px))
        # Blurring pulls the inside of a small mask below full strength; what was grown stays fully
        # generated, the feather only reaches outwards.
        soft = Image.fromarray(np.maximum(np.asarray(soft), grown.astype(np.uint8) * 255), mode="L")
    return Mask(soft, coverage)


def composite(source: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """The generated pixels where the mask is set, the source's everywhere else (exactly: a pixel with a
    zero mask is the source's pixel, bit for bit)."""
    if generated.size != source.size:
        generated = generated.resize(source.size, Image.Resampling.LANCZOS)
    return Image.composite(generated.convert("RGB"), source.convert("RGB"), mask.convert("L"))


class TextMasker:
    """CLIPSeg (transformers ``CLIPSegForImageSegmentation``): where in an image a phrase is."""

    def __init__(self, source: str, *, device: Any, dtype: Any = None) -> None:
        import torch
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        self._torch = torch
        self.device = device
        self.processor = CLIPSegProcessor.from_pretrained(source)
        # fp32 even on a GPU: the model is small, and its logits are thresholded.
        self.model = CLIPSegForImageSegmentation.from_pretrained(source).to(device).eval()
        log.info("loaded the mask model %s", source)

    def probabilities(self, images: list[Image.Image], phrases: list[str]) -> list[np.ndarray]:
        """One map per (image, phrase) pair, values 0–1 at the model's resolution."""
        inputs = self.processor(text=phrases, images=images, padding="max_length", return_tensors="pt")
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        with self._torch.inference_mode():
            logits = self.model(**inputs).logits
        if logits.ndim == 2:  # a batch of one comes back squeezed
            logits = logits.unsqueeze(0)
        return [array for array in self._torch.sigmoid(logits.float()).cpu().numpy()]
