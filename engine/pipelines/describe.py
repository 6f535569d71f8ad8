"""Descriptions: a caption of a member's image (BLIP by default), which the bot turns into prompts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from engine.contract import JobSpec
from engine.pipelines.image_to_image import load_init_image

log = logging.getLogger(__name__)

MAX_CAPTION_TOKENS = 40


class Captioner:
    """transformers ``BlipForConditionalGeneration`` (Salesforce/blip-image-captioning-base)."""

    def __init__(self, source: str, *, device: Any, dtype: Any = None) -> None:
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self._torch = torch
        self.device = device
        self.processor = BlipProcessor.from_pretrained(source)
        self.model = BlipForConditionalGeneration.from_pretrained(source).to(device).eval()
        log.info("loaded the captioner %s", source)

    def captions(self, jobs: Sequence[JobSpec]) -> list[str]:
        images = [load_init_image(job) for job in jobs]
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        with self._torch.inference_mode():
            # Greedy with beams: a caption is a description, not a creative text; the same image always
            # gets the same words.
            ids = self.model.generate(**inputs, max_new_tokens=MAX_CAPTION_TOKENS, num_beams=3, do_sample=False)
        return [" ".join(text.split()) for text in self.processor.batch_decode(ids, skip_special_tokens=True)]
