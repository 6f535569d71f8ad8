"""The Docker files, checked as far as a machine without a Docker engine can: the compose file against the
Compose specification's schema, the Dockerfiles with hadolint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=120)


def test_the_compose_file_follows_the_compose_specification() -> None:
    checked = _run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(DOCKER / "compose.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dockerfiles_pass_hadolint() -> None:
    linted = _run("hadolint", str(DOCKER / "Dockerfile.bot"), str(DOCKER / "Dockerfile.engine"))
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_discord_token_reaches_only_the_bot_and_never_an_image() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if name.startswith("engine"):
            assert service["environment"]["ATELIER_DISCORD_TOKEN"] == "", name
    for dockerfile in DOCKER.glob("Dockerfile.*"):
        assert "DISCORD_TOKEN" not in dockerfile.read_text(), dockerfile.name
