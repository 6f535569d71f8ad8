"""`atelier edit` and `atelier describe` through the queue and an engine, as /edit and /describe run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.pngmeta import atelier_record


def atelier(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "street.png"
    pixels = np.random.default_rng(7).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.slow
def test_edit_repair_and_describe_through_the_engine(settings_env: dict[str, str], source: Path) -> None:
    # The tiny CLIPSeg's map is fine-grained noise around 0.5: a high threshold and a hard edge leave pixels on both
    # sides of the mask to check (tests/unit/test_masks.py covers growing and feathering).
    settings_env = {
        **settings_env,
        "ATELIER_MASK_THRESHOLD": "0.7",
        "ATELIER_MASK_DILATE_PX": "0",
        "ATELIER_MASK_FEATHER_PX": "0",
    }
    repaired = atelier(settings_env, "edit", str(source), "remove the car", "--tiny", "--seed", "4", "--json")
    assert repaired.returncode == 0, repaired.stderr
    job = json.loads(repaired.stdout)
    assert {"job_id", "instruction", "image", "mode", "seed", "status", "plan", "mask"} <= job.keys()
    assert (job["status"], job["mode"], job["seed"], job["instruction"]) == ("succeeded", "repair", 4, "remove the car")
    assert job["plan"]["action"] == "remove" and job["plan"]["target"] == "the car"
    result, original = _pixels(job["image"]), _pixels(str(source))
    assert result.shape == original.shape  # the source's size
    with Image.open(job["mask"]) as mask_image:
        assert mask_image.size == (96, 64)
        mask = np.asarray(mask_image.convert("L"))
    outside = mask == 0
    assert outside.any() and (~outside).any()
    assert np.array_equal(result[outside], original[outside])  # nothing outside the mask changed
    with Image.open(job["image"]) as image:
        recorded = atelier_record(image.text)
        # The A1111 text starts with what the inpainting model was asked to draw.
        assert image.text["parameters"].startswith("empty background")
    assert (recorded["instruction"], recorded["kind"], recorded["seed"]) == ("remove the car", "repair", 4)
    assert recorded["plan"]["target"] == "the car"

    again = json.loads(
        atelier(settings_env, "edit", str(source), "remove the car", "--tiny", "--seed", "4", "--json").stdout
    )
    assert again["job_id"] != job["job_id"] and np.array_equal(_pixels(again["image"]), result)

    edited = atelier(settings_env, "edit", str(source), "make it winter", "--tiny", "--seed", "4", "--json")
    assert edited.returncode == 0, edited.stderr
    winter = json.loads(edited.stdout)
    assert (winter["status"], winter["mode"]) == ("succeeded", "instruction")
    assert "mask" not in winter and "plan" not in winter
    assert _pixels(winter["image"]).shape == original.shape
    assert not np.array_equal(_pixels(winter["image"]), original)

    described = atelier(settings_env, "describe", str(source), "--tiny", "--json")
    assert described.returncode == 0, described.stderr
    description = json.loads(described.stdout)
    assert isinstance(description["caption"], str) and description["caption"]
    prompts = description["prompts"]
    assert len(prompts) == 4 and len(set(prompts)) == 4
    assert all(prompt.startswith(description["caption"][:20]) for prompt in prompts)


def test_bad_inputs_exit_2_with_one_line(settings_env: dict[str, str], source: Path, tmp_path: Path) -> None:
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    cases = [
        ("edit", str(tmp_path / "missing.png"), "remove the car"),
        ("edit", str(not_an_image), "remove the car"),
        ("edit", str(source), "   "),
        ("describe", str(tmp_path / "missing.png")),
        ("describe", str(not_an_image)),
    ]
    for args in cases:
        done = atelier(settings_env, *args, "--tiny")
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr)
        assert "Traceback" not in done.stderr
    # Nothing was written for any of them: no database, no upload.
    data_dir = Path(settings_env["ATELIER_DATA_DIR"])
    assert not (data_dir / "atelier.db").exists()
    assert not list((data_dir / "uploads").glob("*")) if (data_dir / "uploads").exists() else True
