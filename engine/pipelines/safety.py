"""Optional image classifier: scores each result so the bot can blur or withhold flagged images."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

# Labels that mean "not safe for work" across the common open classifiers.
FLAGGED_LABELS = ("nsfw", "porn", "hentai", "sexy", "explicit", "nude", "unsafe")


class SafetyClassifier:
    """Any transformers image-classification model, by hub id or directory."""

    def __init__(self, source: str, *, device: Any = "cpu") -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.processor = AutoImageProcessor.from_pretrained(source)
        self.model = AutoModelForImageClassification.from_pretrained(source).to(device).eval()
        self.device = device
        labels = self.model.config.id2label
        self.flagged = [int(i) for i, name in labels.items() if any(f in name.lower() for f in FLAGGED_LABELS)]
        if not self.flagged:
            log.warning("classifier %s has no NSFW-like label among %s; nothing will be flagged", source, labels)
        self._torch = torch

    def scores(self, images: Sequence[Any]) -> list[float]:
        """Probability mass on flagged labels, per image."""
        if not self.flagged:
            return [0.0] * len(images)
        inputs = self.processor(images=list(images), return_tensors="pt").to(self.device)
        with self._torch.inference_mode():
            probabilities = self.model(**inputs).logits.float().softmax(-1)
        return [round(float(p), 4) for p in probabilities[:, self.flagged].sum(-1)]


def build_tiny_classifier(out_dir: Any) -> Any:
    """A random-weight ViT classifier with labels normal/nsfw, saved like a hub model."""
    from pathlib import Path

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from engine.tiny import save_atomically

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
        id2label={0: "normal", 1: "nsfw"},
        label2id={"normal": 0, "nsfw": 1},
    )

    def write(tmp: Path) -> None:
        ViTForImageClassification(config).save_pretrained(tmp)
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp)

    return save_atomically(out_dir, write)


class ScoredPipeline:
    """Wraps a pipeline so every image it returns carries the classifier's NSFW score."""

    def __init__(self, pipeline: Any, classifier: SafetyClassifier) -> None:
        self.pipeline = pipeline
        self.classifier = classifier
        self.model = pipeline.model

    def generate(self, jobs: Sequence[Any], **options: Any) -> Any:
        import dataclasses
        import io

        from PIL import Image

        output = self.pipeline.generate(jobs, **options)
        started = time.perf_counter()
        scored = []
        for images in output.images:
            if not images:  # a description: nothing to score
                scored.append(images)
                continue
            pictures = [Image.open(io.BytesIO(image.png)).convert("RGB") for image in images]
            scores = self.classifier.scores(pictures)
            scored.append([dataclasses.replace(image, nsfw_score=s) for image, s in zip(images, scores, strict=True)])
        # The classifier's time is part of what the batch cost, like the scorer's.
        return dataclasses.replace(output, images=scored, seconds=output.seconds + time.perf_counter() - started)
