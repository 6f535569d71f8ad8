"""The schema's migrations, and Alembic run from code so the bot, the engine and the CLI all upgrade the
same way. Upgrading needs nothing of the bot: an engine on the SQLite queue migrates without loading it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

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


class SchemaOutOfDate(Exception):
    """The database is older (or newer) than this Atelier: only `atelier migrate`, the bot, the engine and
    the local `imagine` change the schema; every other command says so instead of migrating in silence."""

    exit_code = 2

    def __init__(self, url: str, current: str | None, head: str | None) -> None:
        where = url.split("///", 1)[-1]
        if current is None:
            super().__init__(f"the database at {where} has no schema yet: run atelier migrate")
        else:
            super().__init__(
                f"the database at {where} is at revision {current}, this Atelier needs {head}: run atelier migrate"
            )


def _missing_sqlite_file(url: str) -> bool:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and bool(parsed.database) and not Path(parsed.database).is_file()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def require_current(url: str) -> None:
    """Raise SchemaOutOfDate unless the database is at this Atelier's head; reads only."""
    from engine.queue.database import create_engine

    if _missing_sqlite_file(url):
        raise SchemaOutOfDate(url, None, head_revision())  # and create no empty file while saying so
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        raise SchemaOutOfDate(url, current, head)
