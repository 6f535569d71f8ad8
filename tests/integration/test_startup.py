"""Starting Atelier on a machine or with settings that cannot work: one line, exit code 2, no traceback,
before anything slow (a model load, a gateway connection) begins. Run as an operator runs it: a process."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from bot.cli import main
from migrations import alembic_config, head_revision, upgrade
from tests.simulator import DiscordSimulator

FIRST_REVISION = ScriptDirectory.from_config(alembic_config("sqlite://")).get_base()


def atelier(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=120)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    return line


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "command", "expected"),
    [
        (
            {"ATELIER_QUEUE_URL": "redis://127.0.0.1:9/0"},
            ["status"],
            "error: ATELIER_QUEUE_URL: cannot reach Redis at redis://127.0.0.1:9/0",
        ),
        (
            {"ATELIER_QUEUE_URL": "redis://atelier:hunter2@127.0.0.1:9/0"},
            ["engine", "--tiny"],
            "error: ATELIER_QUEUE_URL: cannot reach Redis at redis://atelier:***@127.0.0.1:9/0",
        ),
        ({"ATELIER_DATA_DIR": "{file}/data"}, ["status"], "error: ATELIER_DATA_DIR: cannot write to {file}/data"),
        ({"ATELIER_DATA_DIR": "{file}/data"}, ["engine", "--tiny"], "error: ATELIER_DATA_DIR: cannot write to"),
        ({"ATELIER_EXPANSION_MODE": "clever"}, ["status"], "error: ATELIER_EXPANSION_MODE: Input should be 'llm'"),
        (
            {"ATELIER_DEVICE": "gpu"},
            ["engine", "--tiny"],
            "error: ATELIER_DEVICE: Value error, must be auto, cpu, cuda",
        ),
        (
            {"ATELIER_MODEL": "{tmp}/no-such-model"},
            ["engine"],
            "error: ATELIER_MODEL: cannot load '{tmp}/no-such-model'",
        ),
        pytest.param(
            {"ATELIER_DEVICE": "cuda"},
            ["engine", "--tiny"],
            "error: ATELIER_DEVICE is cuda, but this machine has no CUDA device",
            marks=pytest.mark.skipif(_cuda(), reason="this machine has CUDA"),
        ),
    ],
    ids=["redis-down", "redis-down-engine", "data-dir", "data-dir-engine", "mode", "device", "model", "cuda"],
)
def test_a_machine_or_setting_that_cannot_work_stops_at_start_with_one_line(
    env: dict[str, str], command: list[str], expected: str, settings_env: dict[str, str], tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("a file where the data directory should go")
    fill = {"file": str(not_a_dir), "tmp": str(tmp_path)}
    result = atelier(settings_env | {name: value.format(**fill) for name, value in env.items()}, *command)
    line = one_line(result)
    assert line.startswith(expected.format(**fill)), line
    assert "hunter2" not in result.stderr


def test_read_only_commands_on_an_old_database_say_run_migrate_and_change_nothing(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    env = settings_env | {"ATELIER_DATA_DIR": str(tmp_path / "fresh")}
    assert one_line(atelier(env, "status")) == (
        f"error: the database at {tmp_path}/fresh/atelier.db has no schema yet: run atelier migrate"
    )
    assert not (tmp_path / "fresh" / "atelier.db").exists()  # saying so created no empty database

    old = tmp_path / "old"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{old / 'atelier.db'}", FIRST_REVISION))
    for command in (["status"], ["jobs", "list"], ["quota", "show", "--guild", "1", "--user", "7"]):
        line = one_line(atelier(settings_env | {"ATELIER_DATA_DIR": str(old)}, *command))
        assert line == (
            f"error: the database at {old}/atelier.db is at revision {FIRST_REVISION}, "
            f"this Atelier needs {head_revision()}: run atelier migrate"
        )
    migrated = atelier(settings_env | {"ATELIER_DATA_DIR": str(old)}, "migrate")
    assert migrated.returncode == 0
    assert migrated.stderr == ""  # no Alembic chatter by default
    assert atelier(settings_env | {"ATELIER_DATA_DIR": str(old)}, "status").returncode == 0


def test_logs_can_be_json_one_object_a_line(settings_env: dict[str, str]) -> None:
    env = settings_env | {"ATELIER_LOG_FORMAT": "json", "ATELIER_LOG_LEVEL": "debug"}
    result = atelier(env, "migrate")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records, "at DEBUG a migration logs what it does"
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    assert any(record["logger"].startswith("alembic") for record in records)


def test_the_hubs_download_progress_bars_stay_on_for_the_engine(settings_env: dict[str, str]) -> None:
    env = {name: value for name, value in settings_env.items() if name != "HF_HUB_DISABLE_PROGRESS_BARS"}
    code = (
        "from engine.serve import quiet_model_libraries; quiet_model_libraries(); "
        "from huggingface_hub.utils import are_progress_bars_disabled; print(are_progress_bars_disabled())"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


@pytest.fixture
def own_logging() -> Iterator[None]:
    """The command configures logging in this process: take its handler away again afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_a_wrong_bot_token_stops_the_bot_with_one_line_and_is_never_logged(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], own_logging: None
) -> None:
    wrong = "MTIz.wrong.token-that-must-not-appear"
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ATELIER_DISCORD_TOKEN", wrong)
    monkeypatch.setenv("ATELIER_LOG_LEVEL", "DEBUG")  # even where everything is logged
    sim = DiscordSimulator()
    await sim.start()
    try:
        with sim.pointed_at():
            code = await asyncio.to_thread(main, ["bot"])
    finally:
        await sim.stop()
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines()[-1] == "error: Discord refused the bot token: check ATELIER_DISCORD_TOKEN"
    assert "Traceback" not in err
    assert wrong not in err
    assert [call.status for call in sim.calls_to("/users/@me")] == [401]


@pytest.mark.slow
def test_half_precision_loads_the_fp16_variant_where_the_model_ships_one(models_dir: Path, tmp_path: Path) -> None:
    import shutil

    import torch
    from diffusers import StableDiffusionPipeline

    from engine.pipelines.registry import half_precision_variant
    from engine.pipelines.text_to_image import PipelineOptions, TextToImage
    from engine.tiny import build_tiny_sd

    plain = build_tiny_sd(models_dir / "tiny-sd")
    assert half_precision_variant(str(plain)) is None
    with_variant = tmp_path / "with-fp16"
    shutil.copytree(plain, with_variant)
    pipe = StableDiffusionPipeline.from_pretrained(plain)
    with torch.no_grad():
        pipe.unet.conv_in.bias.fill_(0.5)  # marks the variant's weights apart from the full ones
    pipe.to(torch.float16).save_pretrained(with_variant, variant="fp16")
    assert half_precision_variant(str(with_variant)) == "fp16"

    half = TextToImage("m", str(with_variant), device="cpu", dtype="float16", options=PipelineOptions(warmup=False))
    assert half.variant == "fp16"
    assert torch.all(half.pipe.unet.conv_in.bias == 0.5)
    full = TextToImage("m", str(with_variant), device="cpu", dtype="float32", options=PipelineOptions(warmup=False))
    assert full.variant is None
    assert not torch.all(full.pipe.unet.conv_in.bias == 0.5)
