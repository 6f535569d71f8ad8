"""The SQLite connection SQLAlchemy is handed (engine.queue.driver): one trip per statement, and
everything SQLAlchemy reads from a cursor (rows, counts, ids, errors) as sqlite3 gives it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from engine.queue.database import Database
from engine.queue.driver import OneTripConnection
from tests.integration.test_cli import atelier


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT UNIQUE, seen INT)"))
    yield database
    await database.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each call sent to a connection's thread."""
    sent: list[str] = []
    original = OneTripConnection._execute

    async def counted(self: OneTripConnection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(OneTripConnection, "_execute", counted)
    return sent


async def test_a_short_read_or_write_makes_three_trips_to_the_connection_thread(db: Database, trips: list[str]) -> None:
    # aiosqlite through SQLAlchemy's own adapter made nine for the read and eight for the write.
    async with db.sessions() as session:
        await session.execute(text("SELECT count(*) FROM notes"))
    assert trips == ["_run", "_run", "rollback"]  # BEGIN, the SELECT, the ROLLBACK
    trips.clear()
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO notes (body) VALUES ('a')"))
    assert trips == ["_run", "_run", "commit"]  # BEGIN IMMEDIATE, the INSERT, the COMMIT


async def test_a_glance_is_one_trip_a_statement_and_sees_each_latest_commit(db: Database, trips: list[str]) -> None:
    async with db.glances() as session:
        assert (await session.execute(text("SELECT count(*) FROM notes"))).scalar_one() == 0
        assert trips == ["_run"]  # no BEGIN before it
        async with db.transaction() as writer:  # another connection commits between two statements
            await writer.execute(text("INSERT INTO notes (body) VALUES ('new')"))
        # No snapshot holds the first statement's view: the second one sees the commit.
        assert (await session.execute(text("SELECT count(*) FROM notes"))).scalar_one() == 1
    assert trips[-1] == "_run"  # and no ROLLBACK after


async def test_rows_counts_and_new_ids_are_what_sqlite_reports(db: Database) -> None:
    async with db.transaction() as session:
        inserted = await session.execute(text("INSERT INTO notes (body, seen) VALUES ('first', 0)"))
        assert inserted.lastrowid == 1
        many = await session.execute(
            text("INSERT INTO notes (body, seen) VALUES (:body, 0)"), [{"body": "second"}, {"body": "third"}]
        )
        assert many.rowcount == 2
        updated = await session.execute(text("UPDATE notes SET seen = 1 WHERE body != 'first'"))
        assert updated.rowcount == 2
        returned = await session.execute(text("UPDATE notes SET seen = seen + 1 RETURNING body, seen"))
        assert sorted(returned.all()) == [("first", 1), ("second", 2), ("third", 2)]
    async with db.sessions() as session:
        result = await session.execute(text("SELECT body FROM notes ORDER BY id"))
        assert result.fetchone() == ("first",)
        assert result.fetchmany(1) == [("second",)]
        assert result.fetchall() == [("third",)]


async def test_a_failed_statement_raises_sqlalchemys_error_and_its_transaction_is_rolled_back(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO notes (body) VALUES ('kept out')"))
            await session.execute(text("INSERT INTO notes (body) VALUES ('kept out')"))  # UNIQUE
    async with db.sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM notes"))).scalar_one() == 0
    # The connection went back to the pool in a clean state: the next write commits.
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO notes (body) VALUES ('after')"))
    async with db.sessions() as session:
        assert (await session.execute(text("SELECT body FROM notes"))).scalars().all() == ["after"]


async def test_an_in_memory_database_works_too() -> None:
    database = Database("sqlite+aiosqlite://")
    try:
        async with database.transaction() as session:
            await session.execute(text("CREATE TABLE t (v INT)"))
            await session.execute(text("INSERT INTO t VALUES (7)"))
        async with database.sessions() as session:
            assert (await session.execute(text("SELECT v FROM t"))).scalar_one() == 7
    finally:
        await database.dispose()


def test_bench_sessions_compares_the_two_connections_in_one_run(settings_env: dict[str, str]) -> None:
    result = atelier(settings_env, "bench", "sessions", "--rounds", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rounds"] == 3
    assert set(report["results"]) == {"read", "write", "claim"}
    for name, row in report["results"].items():
        assert row["aiosqlite_p50_ms"] > 0 and row["one_trip_p50_ms"] > 0
        assert row["one_trip_trips"] < row["aiosqlite_trips"], name
    assert report["results"]["read"]["one_trip_trips"] == report["results"]["write"]["one_trip_trips"] == 3


def test_bench_sessions_refuses_no_rounds_in_one_line(settings_env: dict[str, str]) -> None:
    result = atelier(settings_env, "bench", "sessions", "--rounds", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --rounds must be at least 1"]
