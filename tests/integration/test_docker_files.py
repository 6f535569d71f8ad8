"""The Docker files, checked as far as a machine without a Docker engine can: the compose file against the
Compose specification's schema, the Dockerfiles with hadolint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
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


def _docker_unavailable() -> str | None:
    """Why the images cannot be built here, or None where a Docker engine answers."""
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"no docker command: {error}"
    if info.returncode != 0:
        return f"no Docker engine answers: {(info.stderr.strip().splitlines() or ['docker info failed'])[-1]}"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("image", ["bot", "engine"])
def test_the_images_build(image: str) -> None:
    reason = _docker_unavailable()
    if reason is not None:
        pytest.skip(f"cannot build the {image} image here: {reason}")
    root = DOCKER.parent
    built = subprocess.run(
        ["docker", "build", "-f", str(DOCKER / f"Dockerfile.{image}"), "-t", f"atelier-{image}:test", str(root)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    version = subprocess.run(
        ["docker", "run", "--rm", f"atelier-{image}:test", "--version"], capture_output=True, text=True, timeout=300
    )
    assert version.stdout.startswith("atelier "), version.stdout + version.stderr
