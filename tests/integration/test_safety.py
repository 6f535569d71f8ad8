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


def test_edits_are_scored_like_any_image_and_descriptions_pass(models_dir: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from bot.config import Settings
    from engine.contract import JobSpec
    from engine.serve import load_pipeline

    pipeline = load_pipeline(Settings(tiny=True, models_path=models_dir, safety_model="tiny"))
    Image.new("RGB", (64, 64), "green").save(tmp_path / "source.png")
    edit = JobSpec(
        kind="edit",
        member_prompt="make it winter",
        model_prompt="make it winter",
        negative_prompt="",
        model="atelier/tiny-sd",
        width=64,
        height=64,
        steps=1,
        guidance=2.0,
        seed=3,
        init_image=str(tmp_path / "source.png"),
        plan={"mode": "instruction", "image_guidance": 1.5},
    )
    [[image]] = pipeline.generate([edit]).images
    assert image.nsfw_score is not None and 0.0 <= image.nsfw_score <= 1.0
    described = pipeline.generate([replace(edit, kind="describe", plan=None)])
    assert described.images == [[]] and isinstance(described.extras[0]["caption"], str)
