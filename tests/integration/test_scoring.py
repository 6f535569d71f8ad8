"""Preference scoring with the tiny CLIP of the real class: scores stored and shown, grids ordered by
score, best-of keeping the top candidate, and a server's off switch."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.cli.wiring import Services
from bot.config import Settings
from bot.services.jobs import ImagineRequest
from bot.ui.messages import info_message, result_embed
from engine.contract import JobSpec, image_seed
from engine.pipelines.scorer import TINY_SCORER_NAME, ScoringPipeline, build_tiny_scorer, load_scorer
from engine.pngmeta import atelier_record
from engine.queue.sqlite import SqliteQueue
from engine.serve import load_pipeline
from engine.worker import EngineWorker, WorkerConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored_pipeline(models_dir: Path) -> ScoringPipeline:
    pipeline = load_pipeline(Settings(tiny=True, models_path=models_dir))
    assert isinstance(pipeline, ScoringPipeline)
    return pipeline


def _spec(**overrides: object) -> JobSpec:
    values: dict[str, object] = {
        "kind": "txt2img",
        "member_prompt": "a fox",
        "model_prompt": "a fox in the snow, soft light",
        "negative_prompt": "",
        "model": "atelier/tiny-sd",
        "width": 64,
        "height": 64,
        "steps": 2,
        "guidance": 0.0,
        "seed": 41,
    }
    return JobSpec(**{**values, **overrides})  # type: ignore[arg-type]


def _decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_scorer_is_a_real_clip_model_and_scores_deterministically(models_dir: Path) -> None:
    from transformers import CLIPModel

    scorer = load_scorer("tiny", None, models_dir, device="cpu")
    assert isinstance(scorer.model, CLIPModel) and scorer.name == TINY_SCORER_NAME
    images = [Image.new("RGB", (64, 64), colour) for colour in ("red", "navy", "white")]
    first = scorer.score(images, ["a red square"] * 3, ["red"] * 3)
    again = scorer.score(images[::-1], ["a red square"] * 3, ["red"] * 3)[::-1]
    assert first == again  # a score belongs to the image, not to its place in the batch
    assert len({s.score for s in first}) == 3
    # Alignment is a cosine; the preference is the model's logit scale times a cosine.
    assert all(-1.0 <= s.alignment <= 1.0 for s in first)
    assert build_tiny_scorer(models_dir / "tiny-clip") == models_dir / "tiny-clip"  # built once


def test_best_of_keeps_the_top_candidates_highest_first(scored_pipeline: ScoringPipeline) -> None:
    spec = _spec(count=2, best_of=3)
    output = scored_pipeline.generate([spec, _spec(seed=99)])
    kept, extra = output.images[0], output.extras[0]
    candidates = extra["candidates"]
    assert extra["scorer"] == TINY_SCORER_NAME
    assert [c["seed"] for c in candidates] == [image_seed(41, i) for i in range(6)]
    top = sorted(candidates, key=lambda c: -c["score"])[:2]
    assert [(i.seed, i.score) for i in kept] == [(c["seed"], c["score"]) for c in top]
    assert [i.index for i in kept] == [0, 1]
    # The kept image is the candidate drawn with that seed: the same pixels as that image drawn alone.
    alone = scored_pipeline.generate([_spec(seed=kept[0].seed, scoring=False)]).images[0][0]
    assert np.abs(_decoded(alone.png).astype(int) - _decoded(kept[0].png).astype(int)).max() <= 1
    # The job batched beside it was scored on its own and kept its one image.
    assert len(output.images[1]) == 1 and output.images[1][0].score is not None


def test_a_job_with_scoring_off_is_neither_scored_nor_reordered(scored_pipeline: ScoringPipeline) -> None:
    output = scored_pipeline.generate([_spec(count=2, scoring=False)])
    assert [(i.seed, i.score) for i in output.images[0]] == [(41, None), (42, None)]
    assert output.extras == [{}]


def test_the_scorers_time_counts_in_what_the_batch_cost(scored_pipeline: ScoringPipeline) -> None:
    class SlowScorer:
        """The real scorer, a quarter of a second slower: a job's GPU seconds must show it."""

        def __init__(self, scorer: object) -> None:
            self.scorer = scorer
            self.name = scorer.name  # type: ignore[attr-defined]

        def score(self, *args: object) -> object:
            time.sleep(0.25)
            return self.scorer.score(*args)  # type: ignore[attr-defined]

    slow = ScoringPipeline(scored_pipeline.pipeline, SlowScorer(scored_pipeline.scorer))  # type: ignore[arg-type]
    # The tiny model draws in well under a quarter of a second: only the scorer's time can get it there.
    assert slow.generate([_spec()]).seconds >= 0.25


async def _run_engine(services: Services, pipeline: ScoringPipeline) -> None:
    assert isinstance(services.queue, SqliteQueue)
    config = WorkerConfig(max_batch=4, batch_wait_ms=0, poll_seconds=0.02, idle_exit_seconds=0.2)
    await asyncio.wait_for(EngineWorker(services.queue, pipeline, config).run(), timeout=120)


async def test_scores_are_stored_ordered_and_shown(services: Services, scored_pipeline: ScoringPipeline) -> None:
    await services.admin.configure(guild_id=5, actor_id=1, best_of=2)
    job = await services.jobs.submit(ImagineRequest(prompt="a lighthouse at dusk", guild_id=5, user_id=3, count=2))
    assert job.best_of == 2
    # Both candidates of each image are charged.
    usage = await services.admin.show_quota(guild_id=5, user_id=3)
    assert usage["used_images"] == 4
    await _run_engine(services, scored_pipeline)
    done = await services.jobs.get(job.id)
    assert done.status == "succeeded" and done.scorer == TINY_SCORER_NAME
    scores = [image.score for image in done.images]
    assert None not in scores and scores == sorted(scores, reverse=True)
    assert len(done.candidates or []) == 4
    assert {image.seed for image in done.images} <= {c["seed"] for c in done.candidates or []}
    for image in done.images:
        # The stored file is the image of the stored seed (its own PNG metadata says so).
        with Image.open(image.path) as png:
            assert atelier_record(png.text)["seed"] == image.seed
    shown = json.loads(info_message(done)["content"].removeprefix("```json\n").removesuffix("\n```"))
    assert shown["scorer"] == TINY_SCORER_NAME
    assert [i["score"] for i in shown["images"]] == scores
    embed = result_embed(done)
    assert any(field.name == "Score" and f"{scores[0]:.2f}" in str(field.value) for field in embed.fields)


async def test_a_server_can_turn_scoring_off(services: Services, scored_pipeline: ScoringPipeline) -> None:
    await services.admin.configure(guild_id=6, actor_id=1, scoring=False)
    job = await services.jobs.submit(ImagineRequest(prompt="a lighthouse at dusk", guild_id=6, user_id=3, count=1))
    await _run_engine(services, scored_pipeline)
    done = await services.jobs.get(job.id)
    assert done.status == "succeeded" and done.scorer is None
    assert [image.score for image in done.images] == [None]
    from bot.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="scoring"):
        await services.jobs.submit(ImagineRequest(prompt="a fox", guild_id=6, user_id=3, best_of=3))
    with pytest.raises(InvalidRequest, match="between 1 and 8"):
        await services.jobs.submit(ImagineRequest(prompt="a fox", guild_id=5, user_id=3, best_of=9))


def test_atelier_eval_scorer_and_expansion(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.cli import main

    monkeypatch.setenv("ATELIER_MODELS_PATH", str(settings.models_dir))
    lines = []
    for number, colour in enumerate(("red", "navy", "white", "olive", "teal", "black")):
        path = tmp_path / f"{colour}.png"
        Image.new("RGB", (64, 64), colour).save(path)
        lines.append(json.dumps({"image": str(path), "mean_score": 1 + number % 5, "member_prompt": f"p{number % 2}"}))
    lines += ["not json", json.dumps({"image": str(tmp_path / "gone.png"), "mean_score": 3})]
    ratings = tmp_path / "ratings.jsonl"
    ratings.write_text("\n".join(lines) + "\n")
    common = ["--tiny", "--json", "--data-dir", str(settings.data_dir)]
    capsys.readouterr()
    assert main(["eval", "scorer", str(ratings), *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scorer"] == TINY_SCORER_NAME and report["n"] == 6 and report["pairs"] == 6
    assert -1.0 <= report["spearman"] <= 1.0 and -1.0 <= report["kendall"] <= 1.0
    assert [e["line"] for e in report["errors"]] == [7, 8]

    prompts = tmp_path / "prompts.txt"
    prompts.write_text('a fox in the snow\n{"member_prompt": "a lighthouse at dusk"}\n')
    assert main(["eval", "expansion", str(prompts), "--mode", "presets", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 2 and [r["member_prompt"] for r in report["results"]] == [
        "a fox in the snow",
        "a lighthouse at dusk",
    ]
    assert all(r["model_prompt"].startswith(r["member_prompt"] + ", ") for r in report["results"])
    assert report["preference"]["n"] == 2 and report["preference"]["raw"]["mean"] is not None
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert main(["eval", "expansion", str(empty), *common]) == 2


def test_a_scorer_that_cannot_load_stops_the_engine_with_one_line(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from engine.config import ConfigError
    from engine.serve import with_scorer

    settings = Settings(scorer_model=str(tmp_path / "no-such-model"), models_path=tmp_path)
    with pytest.raises(ConfigError, match=r"^ATELIER_SCORER_MODEL: cannot load .*ATELIER_SCORER_MODEL=none"):
        with_scorer(SimpleNamespace(device="cpu", dtype=None), settings)
    unscored = SimpleNamespace(device="cpu", dtype=None)
    assert with_scorer(unscored, Settings(scorer_model="none")) is unscored
