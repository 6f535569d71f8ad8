"""Engine and session factory tuned for SQLite shared by the bot and engine processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from engine.background import wait_for_event
from engine.queue import driver

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "atelier_write"
GLANCE_OPTION = "atelier_glance"
# How often a CommitWatch looks for a commit by another connection. A look is one read of a counter on
# a connection of its own (no lock, no transaction), so it can be frequent. Where the kernel reports
# changes to the database's files (inotify), a commit wakes the watch at once and the looks are only
# a backstop: every commit writes the WAL file, and WAL works only between processes of one host,
# where inotify sees every write.
WATCH_SECONDS = 0.01
WATCH_SECONDS_WITH_NOTICES = 0.25
# What a commit concerns, told to whoever waits for it (see nudge): engines wait for QUEUE_NEWS, a job
# they may claim; bots for RESULT_NEWS, a result, a step or a cancellation. Without them every commit
# woke every engine and every bot, each to read for nothing: on two cores those reads held up the very
# result being delivered.
QUEUE_NEWS = "queue"
RESULT_NEWS = "results"


def create_engine(url: str, *, one_trip: bool = True) -> AsyncEngine:
    """``one_trip``: SQLite connections that make one trip to their thread per statement (see
    engine.queue.driver); False gives aiosqlite's own, which `atelier bench sessions` compares against."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url)
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    timeout = BUSY_TIMEOUT_MS / 1000
    if one_trip:
        engine = create_async_engine(
            url, async_creator=partial(driver.connect, parsed.database or ":memory:", timeout=timeout)
        )
    else:
        engine = create_async_engine(url, connect_args={"timeout": timeout})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let us issue BEGIN ourselves: pysqlite's implicit, deferred BEGIN makes a read that later
        # writes fail with SQLITE_BUSY under contention instead of waiting for the lock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        # A write transaction takes the write lock up front (IMMEDIATE), so claim and quota checks are
        # serialised across processes and every writer waits on busy_timeout rather than erroring. A
        # reader never takes it: in WAL mode it reads a snapshot while a writer works, so `atelier
        # export` or /stats never wait for (or fail on) an engine's writes.
        options = connection.get_execution_options()
        if options.get(GLANCE_OPTION, False):
            return  # Database.glances: each statement reads on its own, no transaction to begin or end
        connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION, False) else "BEGIN")

    return engine


class Database:
    """Owns the async engine and hands out short transactions."""

    def __init__(self, url: str, *, one_trip: bool = True) -> None:
        self.url = url
        self.engine = create_engine(url, one_trip=one_trip)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads whose statements need no common snapshot (each sees the latest commit), on the paths
        # that run most: a statement is then one trip to the connection's thread, with no BEGIN before
        # it and no ROLLBACK after. Reads only: a write in one would commit on its own.
        self.glances = async_sessionmaker(
            self.engine.execution_options(**{GLANCE_OPTION: True}), expire_on_commit=False
        )
        self._writing = async_sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )
        self._write_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._writers: dict[asyncio.Lock, asyncio.Task[object] | None] = {}  # the task holding each lock

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction. Within a process they take turns on an asyncio lock: SQLite lets one
        writer in at a time anyway, and a writer that finds the lock taken sleeps in SQLite's busy
        handler for up to 100 ms a try, long after the lock is free. Across processes the busy handler
        still arbitrates. Not reentrant: a transaction never opens another."""
        lock = self._write_lock()
        task = asyncio.current_task()
        if lock.locked() and self._writers.get(lock) is task:
            # It would wait for itself forever; fail at once and say where.
            raise RuntimeError("a write transaction was opened inside another one")
        async with lock:
            self._writers[lock] = task
            try:
                async with self._writing() as session, session.begin():
                    yield session
            finally:
                del self._writers[lock]

    def _write_lock(self) -> asyncio.Lock:
        # One lock per event loop: the CLI and the tests run several loops over one Database.
        loop = asyncio.get_running_loop()
        lock = self._write_locks.get(loop)
        if lock is None:
            lock = self._write_locks[loop] = asyncio.Lock()
        return lock

    async def dispose(self) -> None:
        await self.engine.dispose()


def _database_file(url: str) -> str | None:
    """The SQLite file of ``url``; None for an in-memory database or another backend."""
    parsed = make_url(url)
    watched = parsed.database if parsed.get_backend_name() == "sqlite" else None
    return watched if watched and watched != ":memory:" else None


def news_file(database: Path, topic: str) -> Path:
    """The file beside the database that is touched to nudge the watches of ``topic``."""
    return database.with_name(f"{database.name}-{topic}")


def news_files(url: str) -> dict[str, Path]:
    """Each topic's file for the database of ``url``: none for an in-memory one, with no file to watch."""
    database = _database_file(url)
    return {} if database is None else {topic: news_file(Path(database), topic) for topic in (QUEUE_NEWS, RESULT_NEWS)}


def nudge(path: Path) -> None:
    """After a commit that concerns whoever waits for a topic: touch the topic's file (news_file), which
    the kernel reports at once to every watch of that topic. A watch that misses it (no inotify) still
    finds the commit by its counter."""
    try:
        os.utime(path)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            path.touch()
    except OSError:
        log.debug("could not nudge %s", path, exc_info=True)


class CommitWatch:
    """Tells when another connection, of this process or another, has committed to the database file:
    SQLite's ``PRAGMA data_version``, read on a connection kept for it alone. Engines wait on it for new
    jobs, the bot for results, progress and cancellations, instead of querying for them on a timer.

    With a ``topic`` (QUEUE_NEWS, RESULT_NEWS) and the kernel's file notices, a wait ends at once for a
    nudge of that topic, and for any other commit only at its next look, every
    WATCH_SECONDS_WITH_NOTICES: a commit nobody nudged for is still seen, a little later, and the
    commits that concern someone else (the waiter's own among them) no longer wake it at once."""

    def __init__(self, url: str, *, topic: str | None = None) -> None:
        # An in-memory database (or one that is not SQLite) has no file to watch: waits then last their
        # whole timeout.
        self.file = _database_file(url)
        self.topic = topic
        self._connection: aiosqlite.Connection | None = None
        self._seen: int | None = None
        self._resync = False
        self._notices: FileNotices | None = None

    async def wait(self, timeout: float, stop: asyncio.Event) -> bool:
        """True as soon as a commit has landed since the last return (the first call only takes note
        and returns True, so that a commit during the caller's next read still counts), False when
        ``stop`` is set or ``timeout`` has passed without one. With a topic and notices, "as soon as"
        holds for the nudged commits (see the class)."""
        version = await self._version()
        if version is None or self._seen is None:
            self._seen = version
            if version is None:
                await wait_for_event(stop, timeout)
                return False
            return True
        nudged = self.topic is not None and self._notices is not None
        if self._resync:
            self._seen, self._resync = version, False
        if version != self._seen and not nudged:
            self._seen = version
            return True
        deadline = time.monotonic() + timeout
        while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            if self._notices is not None:
                noticed = await self._notices.wait(min(WATCH_SECONDS_WITH_NOTICES, remaining), stop)
                if noticed and nudged:
                    # The counter is noted at the start of the next wait, which the caller makes at once:
                    # no trip to the watch's thread stands between the nudge and the caller's answer.
                    self._resync = True
                    return True
            else:
                await wait_for_event(stop, min(WATCH_SECONDS, remaining))
            version = await self._version()
            if version != self._seen:
                self._seen = version
                return True
        return False

    async def _version(self) -> int | None:
        if self.file is None:
            return None
        if self._connection is None:
            # Notices first: a commit between the two is then seen by the first read of the counter.
            self._notices = FileNotices.of(Path(self.file), self.topic)
            self._connection = await aiosqlite.connect(self.file, isolation_level=None)
        # One trip to the connection's thread (execute, fetch and close are one call there).
        rows = list(await self._connection.execute_fetchall("PRAGMA data_version"))
        return int(rows[0][0]) if rows else None

    async def close(self) -> None:
        # aiosqlite's thread is not a daemon: a connection left open would keep the process alive.
        connection, self._connection, self._seen, self._resync = self._connection, None, None, False
        notices, self._notices = self._notices, None
        if notices is not None:
            notices.close()
        if connection is not None:
            await connection.close()


class FileNotices:
    """The kernel's word (inotify) that a database's files were written: a reason to read the commit
    counter now, never taken as a commit itself (a reader's lock file or a checkpoint writes too). For a
    topic, the word that its file was touched: a nudge, sent after a commit."""

    def __init__(self, inotify: Any, names: set[str]) -> None:
        self._inotify = inotify
        self._names = names

    @classmethod
    def of(cls, database: Path, topic: str | None = None) -> FileNotices | None:
        """Notices for this database file (for its topic's nudges only, given one), or None where the
        system gives none (not Linux)."""
        try:
            from asyncinotify import Inotify, Mask

            inotify = Inotify(sync_timeout=0)  # sync_get: the notices already in, without waiting
        except Exception:  # no asyncinotify off Linux, or no inotify in this kernel
            log.debug("no file notices here: the database watch polls", exc_info=True)
            return None
        try:
            # The folder, not the files: the WAL file comes and goes with the connections.
            # ATTRIB: a nudge touches its file's time.
            inotify.add_watch(database.parent, Mask.MODIFY | Mask.CREATE | Mask.MOVED_TO | Mask.ATTRIB)
        except OSError:
            inotify.close()
            log.debug("cannot watch %s: the database watch polls", database.parent, exc_info=True)
            return None
        names = {news_file(database, topic).name} if topic else {database.name, f"{database.name}-wal"}
        return cls(inotify, names)

    async def wait(self, timeout: float, stop: asyncio.Event) -> bool:
        """Until one of the files is written, ``stop`` is set, or ``timeout`` passes; at once if one was
        written since the last wait. True if one was."""
        if self._drain():
            return True
        stopped = asyncio.ensure_future(stop.wait())
        written = asyncio.ensure_future(self._written())
        try:
            await asyncio.wait({stopped, written}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            written.cancel()
        return written.done() and not written.cancelled()

    async def _written(self) -> None:
        while not self._about_the_database(await self._inotify.get()):
            pass

    def _drain(self) -> bool:
        """Take every notice already in (a commit writes many pages: one look covers them all); True
        if one was about the database's files."""
        written = False
        while (event := self._inotify.sync_get()) is not None:
            written = self._about_the_database(event) or written
        return written

    def _about_the_database(self, event: Any) -> bool:
        return event.name is not None and event.name.name in self._names

    def close(self) -> None:
        self._inotify.close()
