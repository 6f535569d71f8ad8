"""The schema's migrations, and Alembic run from code so the bot, the engine and the CLI all upgrade the
same way. Upgrading needs nothing of the bot: an engine on the SQLite queue migrates without loading it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent


def alembic_config(url: str) -> Config:
    config = Config(MIGRATIONS_DIR / "alembic.ini")
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    return config


def upgrade_sync(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    # env.py runs its own event loop, so Alembic gets a thread of its own.
    await asyncio.to_thread(upgrade_sync, url, revision)
