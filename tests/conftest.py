from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli.wiring import Services
from bot.config import Settings
from engine.queue.database import Database
from migrations import upgrade

# Tests never reach a model hub; the loading code must find everything locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models are built once per test session and shared by every test and subprocess."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def settings(tmp_path: Path, models_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        models_path=models_dir,
        tiny=True,
        lease_seconds=2.0,
        heartbeat_seconds=0.3,
        claim_poll_seconds=0.05,
        shutdown_grace_seconds=5.0,
        expansion_mode="presets",
    )


@pytest.fixture
def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings for a subprocess (`atelier …`, `python -m engine`)."""
    return {
        **os.environ,
        "ATELIER_DATA_DIR": str(settings.data_dir),
        "ATELIER_MODELS_PATH": str(settings.models_dir),
        "ATELIER_LEASE_SECONDS": str(settings.lease_seconds),
        "ATELIER_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "ATELIER_CLAIM_POLL_SECONDS": str(settings.claim_poll_seconds),
        "ATELIER_SHUTDOWN_GRACE_SECONDS": str(settings.shutdown_grace_seconds),
        "ATELIER_EXPANSION_MODE": settings.expansion_mode,
    }


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    settings.ensure_dirs()
    await upgrade(settings.db_url)
    db = Database(settings.db_url)
    yield db
    await db.dispose()


@pytest.fixture
async def services(settings: Settings, database: Database) -> AsyncIterator[Services]:
    """The real services over a migrated database, with the deterministic (model-free) expander."""
    built = Services.create(settings)
    yield built
    await built.close()


@pytest.fixture(autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    """A test must end with no task of its own still running: a leftover one (a loop cancelled
    mid-query, say) can hang the event loop's shutdown and, in production, a process's exit."""
    before = set(asyncio.all_tasks())
    yield
    me = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() - before if task is not me and not task.done()]
    if left:
        # A task in its last steps may still be finishing: give it a moment, no more.
        _, pending = await asyncio.wait(left, timeout=0.2)
        left = list(pending)
    assert not left, f"tasks left running: {left}"
