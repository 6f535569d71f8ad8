"""Every table comes from a migration, and the migrations say exactly what the models say."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from bot.db.base import Base
from migrations import upgrade_sync


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'atelier.db'}"
    upgrade_sync(f"sqlite+aiosqlite:///{tmp_path / 'atelier.db'}")
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_upgrade_is_idempotent_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "atelier.db"
    upgrade_sync(f"sqlite+aiosqlite:///{path}")
    upgrade_sync(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"jobs", "images", "usage", "ratings", "quotas", "guilds", "members", "alembic_version"} <= tables
    assert mode == "wal"  # bot and engine processes share the file


def test_the_queue_ledger_names_only_columns_of_the_schema() -> None:
    """The engine declares the columns it writes instead of importing the bot's models; each must be a
    column of the schema, of the same Python type."""
    from bot.db import models  # noqa: F401  (registers every table on the metadata)
    from engine.queue import ledger

    mismatched = []
    for table in (ledger.jobs, ledger.images, ledger.usage, ledger.workers):
        schema = Base.metadata.tables[table.name]
        for column in table.c:
            if column.name not in schema.c:
                mismatched.append(f"{table.name}.{column.name}: not in the schema")
            elif schema.c[column.name].type.python_type is not column.type.python_type:
                mismatched.append(f"{table.name}.{column.name}: {column.type} against {schema.c[column.name].type}")
    assert mismatched == []
