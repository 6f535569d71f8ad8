"""The aiosqlite connection SQLAlchemy is given: one trip to the connection's thread per statement.

aiosqlite runs every call on a thread of its own, and SQLAlchemy's adapter makes four calls per
statement (open a cursor, execute, fetch, close) and one more for the pool's rollback of a connection
that has no transaction. Each trip hands the GIL to the thread and wakes the event loop on the way
back, about 0.2 ms on a 2-core host, so a short read session cost nine trips. Here a statement runs,
fetches and closes its cursor in one trip, and a rollback with nothing to roll back makes none:
three trips for a one-statement read. `atelier bench sessions` measures both in one run.

The queue of calls is aiosqlite's own (``Connection._execute``), the same way SQLAlchemy's dialect
reaches past aiosqlite's public API to set the isolation level on the thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import Any

import aiosqlite


class OneTripConnection(aiosqlite.Connection):
    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        # Nothing to do on the thread yet: the sqlite3 cursor lives only for the statement.
        return OneTripCursor(self)

    async def rollback(self) -> None:
        # The flag is the connection's autocommit state, safe to read here; SQLAlchemy's statements
        # on this connection take turns (its adapter's mutex), so none runs while we read it.
        if self._conn.in_transaction:
            await super().rollback()


async def connect(database: str, **options: Any) -> OneTripConnection:
    connection = OneTripConnection(partial(sqlite3.connect, database, **options), iter_chunk_size=64)
    # As SQLAlchemy does for aiosqlite's own connections: a pooled connection left open at exit must
    # not keep the process alive.
    connection._thread.daemon = True
    return await connection


def _run(
    connection: sqlite3.Connection, sql: str, parameters: Sequence[Any] | None, many: bool
) -> tuple[Any, int, int | None, list[Any]]:
    """On the connection's thread: the statement, its rows and its counts, and the cursor closed."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters or [])
        else:
            cursor.execute(sql, () if parameters is None else parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor:
    """What SQLAlchemy's adapter asks of an aiosqlite cursor, with the rows already fetched."""

    arraysize = 1

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> OneTripCursor:
        return await self._trip(sql, parameters, many=False)

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> OneTripCursor:
        return await self._trip(sql, parameters, many=True)

    async def _trip(self, sql: str, parameters: Sequence[Any] | None, *, many: bool) -> OneTripCursor:
        connection = self._connection
        self.description, self.rowcount, self.lastrowid, self._rows = await connection._execute(
            _run, connection._conn, sql, parameters, many
        )
        return self

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        taken, self._rows = self._rows[: size or self.arraysize], self._rows[size or self.arraysize :]
        return taken

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []
