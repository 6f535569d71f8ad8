"""What an operator runs: backups that are safe while Atelier writes, and settings that fail at once
with one line instead of being ignored."""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.cli import main
from bot.db.models import Job
from engine.queue.database import Database
from migrations import upgrade
from tests.factories import add_job


async def _prompt(db_url: str, job_id: str) -> str | None:
    database = Database(db_url)
    try:
        async with database.sessions() as session:
            return (await session.execute(select(Job.member_prompt).where(Job.id == job_id))).scalar_one_or_none()
    finally:
        await database.dispose()


@pytest.fixture
async def data(tmp_path: Path) -> Path:
    """A data directory whose database is migrated, as `--data-dir` finds it."""
    await upgrade(_db_url(tmp_path / "data"))
    return tmp_path / "data"


def _db_url(data: Path) -> str:
    return f"sqlite+aiosqlite:///{data / 'atelier.db'}"


async def test_backup_while_a_writer_works_then_restore_brings_that_state_back(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = _db_url(data)
    database = Database(db_url)
    try:
        job_id = await add_job(database, prompt="before the backup")
        backup = tmp_path / "backups" / "atelier-1.db"
        async with database.transaction() as session:  # a write in progress does not stop the backup
            await session.execute(update(Job).where(Job.id == job_id).values(member_prompt="uncommitted"))
            assert await asyncio.to_thread(main, ["backup", str(backup), "--data-dir", str(data)]) == 0
        async with database.transaction() as session:
            await session.execute(update(Job).where(Job.id == job_id).values(member_prompt="after the backup"))
    finally:
        await database.dispose()
    assert await _prompt(f"sqlite+aiosqlite:///{backup}", job_id) == "before the backup"

    assert await asyncio.to_thread(main, ["restore", str(backup), "--data-dir", str(data)]) == 0
    assert await _prompt(db_url, job_id) == "before the backup"
    capsys.readouterr()

    assert await asyncio.to_thread(main, ["backup", str(backup), "--data-dir", str(data)]) == 2  # no overwrite
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello")
    assert await asyncio.to_thread(main, ["restore", str(not_a_db), "--data-dir", str(data)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {not_a_db} is not an Atelier database"


@pytest.mark.parametrize(
    ("env", "toml", "expected"),
    [
        ({"ATELIER_QUEUE_URL": "amqp://localhost"}, None, "error: ATELIER_QUEUE_URL: Value error, must be sqlite"),
        ({"ATELIER_LEASE_SECONDS": "soon"}, None, "error: ATELIER_LEASE_SECONDS: Input should be a valid number"),
        ({}, "lease_secnds = 10\n", "unknown setting 'lease_secnds'"),
        ({"ATELIER_CONFIG": "/nowhere/atelier.toml"}, None, "error: ATELIER_CONFIG names /nowhere/atelier.toml"),
    ],
    ids=["queue-url", "number", "toml-key", "missing-config"],
)
def test_a_setting_that_cannot_work_fails_at_once_with_one_line(
    env: dict[str, str],
    toml: str | None,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if toml is not None:
        config = tmp_path / "atelier.toml"
        config.write_text(toml, encoding="utf-8")
        monkeypatch.setenv("ATELIER_CONFIG", str(config))
    for command in (["status", "--data-dir", str(tmp_path)], ["engine", "--tiny", "--data-dir", str(tmp_path)]):
        assert main(command) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert expected in line


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"atelier {version('atelier-discord')}"


async def test_prune_removes_only_what_nothing_needs_and_says_how_much(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import os
    from datetime import timedelta

    from bot.db.models import Image, Rating
    from engine.contract import JobStatus, utcnow

    database = Database(_db_url(data))
    old = utcnow() - timedelta(days=40)
    files: dict[str, Path] = {}

    async def finished_job(name: str, *, rated: bool = False, posted: bool = True, age: timedelta) -> None:
        job_id = await add_job(database)
        path = data / "images" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG" + b"\0" * 1000)
        files[name] = path
        async with database.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status=JobStatus.SUCCEEDED,
                    finished_at=utcnow() - age,
                    channel_id=5,
                    message_id=9 if posted else None,
                )
            )
            image = Image(job_id=job_id, index=0, path=str(path), width=8, height=8, size_bytes=1004, sha256="0" * 64)
            session.add(image)
            await session.flush()
            if rated:
                session.add(Rating(image_id=image.id, job_id=job_id, guild_id=1, user_id=2, emoji="⭐", score=5))

    try:
        await finished_job("old", age=timedelta(days=40))
        await finished_job("rated", rated=True, age=timedelta(days=40))
        await finished_job("unposted", posted=False, age=timedelta(days=40))
        await finished_job("recent", age=timedelta(days=2))
        upload = data / "uploads" / "member.png"
        upload.parent.mkdir(parents=True)
        upload.write_bytes(b"\0" * 500)
        os.utime(upload, (old.timestamp(), old.timestamp()))
        still_used = data / "uploads" / "in-queue.png"
        still_used.write_bytes(b"\0" * 500)
        os.utime(still_used, (old.timestamp(), old.timestamp()))
        queued = await add_job(database)
        async with database.transaction() as session:
            await session.execute(update(Job).where(Job.id == queued).values(init_image=str(still_used)))
    finally:
        await database.dispose()

    args = ["prune", "--older-than", "30d", "--json", "--data-dir", str(data)]
    assert await asyncio.to_thread(main, [*args, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == {"files": 2, "bytes": 1504, "dry_run": True}
    assert files["old"].exists() and upload.exists()

    assert await asyncio.to_thread(main, args) == 0
    assert json.loads(capsys.readouterr().out) == {"files": 2, "bytes": 1504, "dry_run": False}
    assert not files["old"].exists() and not upload.exists()
    assert all(files[name].exists() for name in ("rated", "unposted", "recent")) and still_used.exists()

    assert await asyncio.to_thread(main, ["prune", "--older-than", "soon", "--data-dir", str(data)]) == 2


async def test_a_job_no_engine_serves_says_so_and_is_cancelled_and_refunded_after_the_ttl(services) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from bot.services.jobs import ImagineRequest
    from bot.services.status import queue_status
    from engine.contract import utcnow

    job = await services.jobs.submit(ImagineRequest("a fox", guild_id=1, user_id=2, count=1))
    text = (await services.jobs.progress(job.id)).describe()
    assert text.endswith(f"no engine online for model {job.model}")
    assert (await queue_status(services))["waiting_without_engine"] == {job.model: 1}
    await services.queue.heartbeat("engine-a", job.model)
    services.jobs._engines_seen.clear()  # as if its few seconds of memory had passed
    assert "no engine" not in (await services.jobs.progress(job.id)).describe()
    assert (await queue_status(services))["waiting_without_engine"] == {}

    assert await services.jobs.expire_queued(3600) == []  # not old enough yet
    async with services.db.transaction() as session:
        await session.execute(update(Job).where(Job.id == job.id).values(created_at=utcnow() - timedelta(hours=2)))
    assert await services.jobs.expire_queued(3600) == [job.id]
    ended = await services.jobs.get(job.id)
    assert (ended.status, ended.error) == ("cancelled", "no engine took it within 60 minutes")
    assert (await services.admin.show_quota(guild_id=1, user_id=2))["used_images"] == 0
