"""Preference scoring: every image scored as it is made, grids ordered by score, best-of kept.

The default scorer is PickScore (yuvalkirstain/PickScore_v1, a CLIP-H fine-tuned on human choices) with
the processor of the CLIP it was trained from, loaded through transformers' own ``CLIPModel`` (open_clip
would pull torchvision in). Two numbers per image:

- ``score``: PickScore's preference, ``logit_scale × cos(image, prompt)`` against the prompt the image
  was drawn from (what the model was trained to judge);
- ``alignment``: the plain cosine similarity of the image with the member's own words, not the
  expansion, so a grid that drifted from what was asked shows it.

The scorer runs in the engine, once per batch over every image of every job in it, in the thread that
generated them.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.contract import GeneratedImage, JobSpec, image_seed

log = logging.getLogger(__name__)

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
TINY_SCORER = "tiny"
TINY_SCORER_NAME = "atelier/tiny-clip"
# Images per forward pass of the vision tower: a best-of grid of 8 × 4 candidates at CLIP-H would
# otherwise hold all 32 activations at once.
SCORER_BATCH = 16


@dataclass(frozen=True)
class ImageScore:
    score: float
    alignment: float


class PreferenceScorer:
    """A CLIP-class preference model by hub id or directory; ``processor`` where the model ships none."""

    def __init__(
        self,
        source: str,
        *,
        processor: str | None = None,
        name: str | None = None,
        device: Any = "cpu",
        dtype: Any = None,
    ) -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.name = name or source
        # The Pillow image backend: transformers' default one needs torchvision, which Atelier never installs.
        self.processor = CLIPProcessor.from_pretrained(processor or source, backend="pil")
        model = CLIPModel.from_pretrained(source)
        if dtype is not None:
            model = model.to(dtype=dtype)
        self.model = model.to(device).eval()
        self.device = device
        self.dtype = next(self.model.parameters()).dtype
        self.max_text_tokens = int(self.model.config.text_config.max_position_embeddings)
        self._torch = torch

    def _text_features(self, texts: list[str]) -> Any:
        inputs = self.processor(
            text=texts, padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        ).to(self.device)
        return _unit(_features(self.model.get_text_features(**inputs)))

    def _image_features(self, images: Sequence[Any]) -> Any:
        parts = []
        for start in range(0, len(images), SCORER_BATCH):
            pixels = self.processor(images=list(images[start : start + SCORER_BATCH]), return_tensors="pt")
            pixel_values = pixels["pixel_values"].to(self.device, dtype=self.dtype)
            parts.append(_unit(_features(self.model.get_image_features(pixel_values=pixel_values))))
        return self._torch.cat(parts)

    def score(self, images: Sequence[Any], prompts: Sequence[str], member_prompts: Sequence[str]) -> list[ImageScore]:
        """One score and one alignment per image (PIL), against its prompt and its member's words."""
        if not images:
            return []
        texts = list(dict.fromkeys([*prompts, *member_prompts]))
        position = {text: i for i, text in enumerate(texts)}
        with self._torch.inference_mode():
            image_features = self._image_features(images).float()
            text_features = self._text_features(texts).float()
            scale = float(self.model.logit_scale.exp())
            cosines = image_features @ text_features.T
        out = []
        for row, (prompt, member) in enumerate(zip(prompts, member_prompts, strict=True)):
            out.append(
                ImageScore(
                    score=round(scale * float(cosines[row, position[prompt]]), 4),
                    alignment=round(float(cosines[row, position[member]]), 4),
                )
            )
        return out


def _features(output: Any) -> Any:
    # transformers returns a tensor, or (in newer releases) a model output whose pooled, projected
    # embedding is the feature.
    if hasattr(output, "pooler_output"):
        return output.pooler_output
    return output


def _unit(features: Any) -> Any:
    return features / features.norm(dim=-1, keepdim=True)


def build_tiny_scorer(out_dir: Path | str, *, seed: int = 0) -> Path:
    """A random-weight ``CLIPModel`` of the real class with a processor (the tiny CLIP tokenizer and a
    32-pixel image processor), saved like a hub model so it loads through ``from_pretrained``."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from engine.tiny import clip_tokenizer, save_atomically

    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
        },
        projection_dim=16,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})

    def write(tmp: Path) -> None:
        CLIPModel(config).save_pretrained(tmp)
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp)

    return save_atomically(out_dir, write)


def load_scorer(
    model: str, processor: str | None, models_dir: Path, *, device: Any, dtype: Any = None
) -> PreferenceScorer:
    """The configured scorer; ``tiny`` builds the offline one on first use."""
    if model == TINY_SCORER:
        return PreferenceScorer(str(build_tiny_scorer(models_dir / "tiny-clip")), name=TINY_SCORER_NAME, device=device)
    if model == PICKSCORE_MODEL and processor is None:
        processor = PICKSCORE_PROCESSOR  # PickScore's repository ships the model only
    return PreferenceScorer(model, processor=processor, device=device, dtype=dtype)


def _decode(png: bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


class ScoringPipeline:
    """Wraps a pipeline: draws ``count × best_of`` candidates per job, scores them all in one pass,
    keeps the ``count`` best, highest first. A job with scoring off is drawn and returned as is."""

    def __init__(self, pipeline: Any, scorer: PreferenceScorer) -> None:
        self.pipeline = pipeline
        self.scorer = scorer
        self.model = pipeline.model

    def __getattr__(self, name: str) -> Any:
        # Whatever else the wrapped pipeline offers (its device, its diffusers pipe) stays reachable.
        return getattr(self.pipeline, name)

    def generate(self, jobs: Sequence[JobSpec], **options: Any) -> Any:
        # Candidates are plain images of a bigger grid: image i keeps the seed of image i, so any
        # candidate can be reproduced alone.
        drawn = [
            dataclasses.replace(job, count=job.count * max(1, job.best_of), best_of=1) if job.scoring else job
            for job in jobs
        ]
        output = self.pipeline.generate(drawn, **options)
        pictures, prompts, members, owners = [], [], [], []
        for number, (job, images) in enumerate(zip(jobs, output.images, strict=True)):
            if not job.scoring:
                continue
            for image in images:
                pictures.append(_decode(image.png))
                prompts.append(job.model_prompt)
                members.append(job.member_prompt)
                owners.append((number, image.index))
        started = time.perf_counter()
        scores = dict(zip(owners, self.scorer.score(pictures, prompts, members), strict=True))
        # The scorer runs on the same accelerator: its time is part of what the batch cost.
        seconds = output.seconds + time.perf_counter() - started
        kept: list[list[GeneratedImage]] = []
        extras: list[dict[str, Any]] = []
        inner_extras = output.extras or [{} for _ in jobs]
        for number, (job, images) in enumerate(zip(jobs, output.images, strict=True)):
            if not job.scoring:
                kept.append(
                    [
                        i if i.seed is not None else dataclasses.replace(i, seed=image_seed(job.seed, i.index))
                        for i in images
                    ]
                )
                extras.append(inner_extras[number])
                continue
            ranked = sorted(images, key=lambda i, n=number: (-scores[(n, i.index)].score, i.index))
            best = [
                dataclasses.replace(
                    image,
                    index=rank,
                    seed=image_seed(job.seed, image.index),
                    score=scores[(number, image.index)].score,
                    alignment=scores[(number, image.index)].alignment,
                )
                for rank, image in enumerate(ranked[: job.count])
            ]
            kept.append(best)
            extra: dict[str, Any] = {**inner_extras[number], "scorer": self.scorer.name}
            if job.best_of > 1:
                extra["candidates"] = [
                    {"seed": image_seed(job.seed, i.index), "score": scores[(number, i.index)].score} for i in images
                ]
            extras.append(extra)
        return dataclasses.replace(output, images=kept, extras=extras, seconds=seconds)
