"""`atelier backup PATH` and `atelier restore PATH`: the database through SQLite's online backup API,
which copies a consistent snapshot page by page while the bot and engines keep writing."""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bot.cli.wiring import print_json, settings_from
from bot.errors import InvalidRequest


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("backup", help="copy the database to PATH, safely while Atelier runs")
    common(p)
    p.add_argument("path")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="replace the database with a backup (stop the bot and engines first)")
    common(p)
    p.add_argument("path")
    p.set_defaults(func=cmd_restore)


def database_file(args: argparse.Namespace) -> Path:
    url = make_url(settings_from(args).db_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise InvalidRequest("backup and restore work on a SQLite database file")
    return Path(url.database)


def copy_database(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    # sqlite3's context manager commits but does not close.
    src.close()
    dst.close()


def _check_backup(path: Path) -> None:
    if not path.is_file():
        raise InvalidRequest(f"{path} is not a file")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            revision = db.execute("SELECT version_num FROM alembic_version").fetchone()
        db.close()
    except sqlite3.DatabaseError:
        raise InvalidRequest(f"{path} is not an Atelier database") from None
    if revision is None:
        raise InvalidRequest(f"{path} is not an Atelier database")


def cmd_backup(args: argparse.Namespace) -> int:
    source, target = database_file(args), Path(args.path)
    if not source.is_file():
        raise InvalidRequest(f"there is no database at {source} yet")
    if target.exists():
        raise InvalidRequest(f"{target} exists; give a new path")
    target.parent.mkdir(parents=True, exist_ok=True)
    copy_database(source, target)
    print_json({"backup": str(target), "bytes": target.stat().st_size})
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from migrations import upgrade_sync

    backup, target = Path(args.path), database_file(args)
    _check_backup(backup)
    target.parent.mkdir(parents=True, exist_ok=True)
    copy_database(backup, target)  # into the live file, so WAL readers see a consistent switch
    upgrade_sync(settings_from(args).db_url)  # a backup from an older Atelier is brought up to date
    print_json({"restored": str(backup), "database": str(target)})
    return 0
