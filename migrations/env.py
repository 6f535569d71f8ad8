"""Alembic environment: async engine, batch mode so SQLite tables can be altered."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from engine.config import EngineSettings
from engine.queue.database import create_engine

config = context.config


def _target_metadata() -> MetaData | None:
    """The models, for autogenerate only: upgrading runs the revisions alone, so an engine can migrate
    without loading the bot."""
    if not getattr(config.cmd_opts, "autogenerate", False):
        return None
    from bot.db import models  # noqa: F401  (registers every table on the metadata)
    from bot.db.base import Base

    return Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or EngineSettings().db_url


def _configure(connection: Connection | None = None) -> None:
    options = {
        "target_metadata": _target_metadata(),
        "render_as_batch": True,
        "compare_type": True,
    }
    if connection is None:
        context.configure(url=_url(), literal_binds=True, **options)
    else:
        context.configure(connection=connection, **options)


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
        return
    engine = create_engine(_url())
    async with engine.connect() as conn:
        await conn.run_sync(_run_sync)
    await engine.dispose()


if context.is_offline_mode():
    _configure()
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
