"""Explanations with the tiny pipeline and its real CLIP tokenizer: words mapped to tokens, the re-run
drawing the original pixels, a heatmap tile per word, and nothing left installed afterwards."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.cli import main
from bot.cli.wiring import Services
from bot.config import Settings
from bot.services.jobs import ImagineRequest
from engine.contract import JobSpec
from engine.explain import GRID_COLUMNS, TILE_SIDE, explain_image, word_tokens
from engine.pipelines.text_to_image import TextToImage, attention_processors
from engine.serve import load_pipeline
from engine.worker import EngineWorker, WorkerConfig
from migrations import upgrade

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(models_dir: Path) -> TextToImage:
    return load_pipeline(Settings(tiny=True, models_path=models_dir))


def _spec(**overrides: object) -> JobSpec:
    values: dict[str, object] = {
        "kind": "txt2img",
        "member_prompt": "a fox in the snow",
        "model_prompt": "a fox in the snow, cinematic lighting, volumetric fog",
        "negative_prompt": "",
        "model": "atelier/tiny-sd",
        "width": 64,
        "height": 64,
        "steps": 2,
        "guidance": 0.0,
        "seed": 12,
        "scoring": False,
    }
    return JobSpec(**{**values, **overrides})  # type: ignore[arg-type]


def test_words_map_to_the_tokenizers_tokens(pipeline: TextToImage) -> None:
    tokenizer = pipeline.pipe.tokenizer
    prompt = "a fox in the snow, cinematic lighting"
    words = word_tokens(tokenizer, prompt, "a fox in the snow")
    assert [(w.word, w.source) for w in words] == [
        ("a", "member"),
        ("fox", "member"),
        ("in", "member"),
        ("the", "member"),
        ("snow", "member"),
        ("cinematic", "added"),
        ("lighting", "added"),
    ]
    # The positions are those of the whole prompt tokenised at once: word by word, in order, after the start token.
    whole = tokenizer(prompt).input_ids
    for word in words:
        pieces = tokenizer(word.word, add_special_tokens=False).input_ids
        assert [whole[p] for p in word.positions][: len(pieces)] == pieces
    assert any(len(w.positions) > 1 for w in words), "the tiny vocabulary splits some words into several tokens"


def test_words_past_the_window_are_reported_cut(pipeline: TextToImage) -> None:
    member = "a fox " + "glowing " * 80 + "castle"
    words = word_tokens(pipeline.pipe.tokenizer, member, member)
    assert not words[0].cut and words[-1].word == "castle" and words[-1].cut
    assert all(p <= 75 for w in words if not w.cut for p in w.positions)
    # A raw prompt already cut to the window still names the member's words that never reached the model.
    reached = word_tokens(pipeline.pipe.tokenizer, "a fox glowing", "a fox glowing castle")
    assert (reached[-1].word, reached[-1].cut, reached[-1].positions) == ("castle", True, [])


def test_the_explanation_reruns_the_original_pixels_with_a_tile_per_word(pipeline: TextToImage) -> None:
    spec = _spec(count=2)
    original = pipeline.generate([spec]).images[0][1]  # the second image of a grid, alone
    explanation = explain_image(pipeline, _spec(seed=original.seed or 13), original_png=original.png)
    assert explanation.reproduced and explanation.max_pixel_difference is not None
    assert explanation.max_pixel_difference <= 1
    member_words = [w for w in explanation.words if w.source == "member"]
    assert [w.tile for w in member_words] == list(range(5)) and explanation.tiles == 5
    with Image.open(io.BytesIO(explanation.grid_png)) as grid:
        columns = min(GRID_COLUMNS, 5)
        rows = -(-5 // columns)
        assert grid.width == columns * TILE_SIDE and grid.height % rows == 0
        tiles = np.asarray(grid.convert("RGB"), dtype=np.int16)
    tile_height = tiles.shape[0] // rows
    first, second = tiles[:tile_height, :TILE_SIDE], tiles[:tile_height, TILE_SIDE : 2 * TILE_SIDE]
    assert np.abs(first - second).max() > 0, "each word has its own heatmap"
    # Only while explaining: the pipeline is back on its own processors, and draws what it drew before.
    assert attention_processors(pipeline.pipe) == {"AttnProcessor2_0"}
    again = pipeline.generate([_spec(seed=original.seed or 13)]).images[0][0].png
    assert again == explanation.image_png


def _finished_job(settings: Settings, pipeline: TextToImage) -> dict[str, object]:
    """A two-image job through the real services, queue and worker, as `atelier imagine` makes one."""

    async def make() -> dict[str, object]:
        services = Services.create(settings)
        try:
            await upgrade(settings.db_url)
            job = await services.jobs.submit(ImagineRequest(prompt="a lighthouse at dusk", count=2, seed=3))
            config = WorkerConfig(max_batch=1, batch_wait_ms=0, poll_seconds=0.02, idle_exit_seconds=0.2)
            await EngineWorker(services.queue, pipeline, config).run()
            return (await services.jobs.get(job.id)).to_dict()
        finally:
            await services.close()

    return asyncio.run(make())


def test_atelier_explain_prints_provenance_and_writes_the_grid(
    tmp_path: Path,
    settings: Settings,
    pipeline: TextToImage,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATELIER_MODELS_PATH", str(settings.models_dir))
    monkeypatch.setenv("ATELIER_EXPANSION_MODE", "presets")
    settings.ensure_dirs()
    job = _finished_job(settings, pipeline)
    images = job["images"]
    assert isinstance(images, list) and len(images) == 2
    common = ["--tiny", "--data-dir", str(settings.data_dir)]
    capsys.readouterr()
    assert main(["explain", str(job["job_id"]), "--json", "--index", "1", "--out", str(tmp_path / "x"), *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["expansion"]["member_prompt"] == "a lighthouse at dusk"
    assert report["expansion"]["added"] and report["expansion"]["source"] == "fallback"
    assert report["seed"] == images[1]["seed"] and report["score"] == images[1]["score"]
    assert report["rank"] == 2 and report["scorer"] == job["scorer"]
    assert report["reproduced"] is True
    assert [w["word"] for w in report["words"] if w["tile"] is not None] == ["a", "lighthouse", "at", "dusk"]
    with Image.open(report["heatmaps"]) as grid:
        assert grid.width == 4 * TILE_SIDE
    assert main(["explain", str(job["job_id"]), "--index", "7", *common]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: Job")
