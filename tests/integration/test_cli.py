"""The `atelier` command's contract, run as a newcomer would run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REQUIRED_KEYS = {
    "job_id",
    "member_prompt",
    "model_prompt",
    "negative_prompt",
    "seed",
    "width",
    "height",
    "model",
    "image",
    "status",
}


def atelier(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.slow
def test_imagine_makes_a_png_and_the_same_seed_gives_the_same_pixels(settings_env: dict[str, str]) -> None:
    # The engine the first call starts must outlive the slowest gap between these commands on a loaded
    # machine; the test stops it at the end.
    settings_env = settings_env | {"ATELIER_LOCAL_ENGINE_IDLE_SECONDS": "600"}
    prompt = "a lighthouse on a cliff at dusk"
    first = atelier(settings_env, "imagine", prompt, "--tiny", "--seed", "5", "--json")
    assert first.returncode == 0, first.stderr
    assert " INFO " not in first.stderr  # quiet by default: no migration or engine chatter
    job = json.loads(first.stdout)
    assert REQUIRED_KEYS <= job.keys()
    assert job["status"] == "succeeded"
    assert job["member_prompt"] == prompt
    assert job["model_prompt"].startswith(prompt)  # the member's words stay at the front
    assert (job["seed"], job["width"], job["height"], job["model"]) == (5, 64, 64, "atelier/tiny-sd")
    assert [(i["path"], i["seed"]) for i in job["images"]] == [(job["image"], 5)]
    with Image.open(job["image"]) as image:
        assert image.format == "PNG"
        assert json.loads(image.text["atelier"])["seed"] == 5

    # The engine started by the first call is still alive and serves the second.
    again = json.loads(atelier(settings_env, "imagine", prompt, "--tiny", "--seed", "5", "--json").stdout)
    other = json.loads(atelier(settings_env, "imagine", prompt, "--tiny", "--seed", "6", "--json").stdout)
    assert again["job_id"] != job["job_id"]
    assert np.array_equal(_pixels(job["image"]), _pixels(again["image"]))
    assert not np.array_equal(_pixels(job["image"]), _pixels(other["image"]))

    listed = atelier(settings_env, "jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = {entry["job_id"]: entry["status"] for entry in json.loads(listed.stdout)}
    assert jobs == {job["job_id"]: "succeeded", again["job_id"]: "succeeded", other["job_id"]: "succeeded"}

    status = json.loads(atelier(settings_env, "status", "--json").stdout)
    assert status["queue_depth"] == 0
    assert [w["model"] for w in status["workers"]] == ["atelier/tiny-sd"]
    os.kill(status["workers"][0]["pid"], signal.SIGTERM)


def test_bad_options_exit_2_and_create_no_job(settings_env: dict[str, str]) -> None:
    result = atelier(settings_env, "imagine", "a fox", "--tiny", "--size", "10x10", "--no-wait")
    assert result.returncode == 2
    assert "width must be between" in result.stderr
    listed = atelier(settings_env, "jobs", "list", "--json")
    assert json.loads(listed.stdout) == []


def test_quota_commands_round_trip(settings_env: dict[str, str]) -> None:
    assert atelier(settings_env, "migrate").returncode == 0
    assert atelier(settings_env, "quota", "set", "--guild", "1", "--images-per-day", "2").returncode == 0
    assert atelier(settings_env, "quota", "set", "--guild", "1", "--user", "7", "--images-per-day", "1").returncode == 0
    assert (
        atelier(settings_env, "imagine", "a fox", "--tiny", "--guild", "1", "--user", "7", "--no-wait").returncode == 0
    )
    refused = atelier(settings_env, "imagine", "a fox", "--tiny", "--guild", "1", "--user", "7", "--no-wait")
    assert refused.returncode == 3 and "Daily limit reached" in refused.stderr
    shown = json.loads(atelier(settings_env, "quota", "show", "--guild", "1", "--user", "7", "--json").stdout)
    assert shown["limits"]["images_per_day"] == 1 and shown["used_images"] == 1 and shown["images_left"] == 0
