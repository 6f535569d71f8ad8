"""The optional image classifier, loaded through the real from_pretrained path from a tiny random model."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from engine.pipelines.safety import SafetyClassifier, build_tiny_classifier


def test_tiny_classifier_scores_every_image_between_0_and_1(models_dir: Path) -> None:
    classifier = SafetyClassifier(str(build_tiny_classifier(models_dir / "tiny-safety")))
    assert classifier.flagged == [1]  # the "nsfw" label
    scores = classifier.scores([Image.new("RGB", (64, 64), "red"), Image.new("RGB", (48, 80), "blue")])
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert classifier.scores([Image.new("RGB", (64, 64), "red")])[0] == scores[0]  # deterministic


def test_engine_pipeline_scores_every_image_when_a_classifier_is_configured(models_dir: Path) -> None:
    from bot.config import Settings
    from engine.contract import JobSpec
    from engine.serve import load_pipeline

    pipeline = load_pipeline(Settings(tiny=True, models_path=models_dir, safety_model="tiny"))
    job = JobSpec(
        kind="txt2img",
        member_prompt="a fox",
        model_prompt="a fox",
        negative_prompt="",
        model="atelier/tiny-sd",
        width=64,
        height=64,
        steps=1,
        guidance=0,
        seed=3,
        count=2,
    )
    [images] = pipeline.generate([job]).images
    assert len(images) == 2 and all(0.0 <= image.nsfw_score <= 1.0 for image in images)
