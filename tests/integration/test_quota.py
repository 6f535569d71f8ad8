"""Budgets are reserved in the enqueue transaction: no race, refunds on failure, clear refusals."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from bot.cli.wiring import Services
from bot.db.models import Job
from bot.errors import InvalidRequest, PolicyRefused, QuotaExceeded
from bot.services.jobs import ImagineRequest
from engine.contract import JobStatus
from engine.queue.sqlite import SqliteQueue

GUILD, USER = 10, 20


async def _count_jobs(services: Services, **where: object) -> int:
    async with services.db.sessions() as session:
        query = select(func.count()).select_from(Job).filter_by(**where)
        return int((await session.execute(query)).scalar_one())


async def test_fifty_simultaneous_requests_with_five_left_make_exactly_five_jobs(services: Services) -> None:
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, images_per_day=5)

    async def attempt(i: int) -> bool:
        try:
            await services.jobs.submit(ImagineRequest(f"a fox number {i}", guild_id=GUILD, user_id=USER, count=1))
        except QuotaExceeded:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt(i) for i in range(50)))
    assert sum(outcomes) == 5
    assert await _count_jobs(services, guild_id=GUILD, user_id=USER, count=1) == 5


@pytest.mark.slow
async def test_separate_processes_cannot_overspend(services: Services, settings_env: dict[str, str]) -> None:
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, images_per_day=3)
    command = [
        sys.executable,
        "-m",
        "bot",
        "imagine",
        "a fox",
        "--tiny",
        "--guild",
        str(GUILD),
        "--user",
        str(USER),
        "--no-wait",
    ]
    processes = [
        subprocess.Popen(command, env=settings_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)
    ]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in processes]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 0, 0, 3, 3, 3], results
    assert all("Daily limit reached" in err for code, err in results if code == 3)
    assert await _count_jobs(services, guild_id=GUILD, user_id=USER, count=1) == 3


async def test_refusal_says_when_the_budget_resets(services: Services) -> None:
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, images_per_day=1)
    await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))
    with pytest.raises(QuotaExceeded) as refused:
        await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))
    assert refused.value.resets_at is not None
    assert "0 image(s) left of 1" in str(refused.value)


async def test_cancelled_and_failed_jobs_give_the_budget_back(services: Services, settings) -> None:  # type: ignore[no-untyped-def]
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, images_per_day=1)
    job = await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))
    assert await services.jobs.cancel(job.id, user_id=USER) == JobStatus.CANCELLED
    job = await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))

    queue = SqliteQueue(services.db, settings)
    [claimed] = await queue.claim("w")
    assert await queue.fail(claimed, "boom", retryable=False) == JobStatus.FAILED
    await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))
    shown = await services.admin.show_quota(guild_id=GUILD, user_id=USER)
    assert shown["used_images"] == 1 and shown["images_left"] == 0


async def test_most_generous_role_wins_and_a_member_override_beats_roles(services: Services) -> None:
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, images_per_day=2)
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, role_id=100, images_per_day=5)
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, role_id=200, images_per_day=9)
    shown = await services.admin.show_quota(guild_id=GUILD, user_id=USER, role_ids=(100, 200))
    assert shown["limits"]["images_per_day"] == 9
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, user_id=USER, images_per_day=1)
    shown = await services.admin.show_quota(guild_id=GUILD, user_id=USER, role_ids=(100, 200))
    assert shown["limits"]["images_per_day"] == 1


async def test_minus_one_lifts_the_server_default_for_a_member(services: Services) -> None:
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, images_per_day=1)
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, user_id=USER, images_per_day=-1)
    shown = await services.admin.show_quota(guild_id=GUILD, user_id=USER)
    assert shown["limits"]["images_per_day"] is None  # unlimited, not "not set"
    for _ in range(3):
        await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))
    with pytest.raises(QuotaExceeded):  # others still have the server's one a day
        for _ in range(2):
            await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER + 1, count=1))


async def test_concurrent_job_cap_and_cooldown(services: Services) -> None:
    await services.admin.set_quota(guild_id=GUILD, actor_id=1, max_concurrent=1)
    await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))
    with pytest.raises(QuotaExceeded, match="waiting or running"):
        await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))

    await services.admin.set_quota(guild_id=GUILD, actor_id=1, max_concurrent=-1, cooldown_seconds=3600)
    with pytest.raises(QuotaExceeded, match="Slow down"):
        await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))


async def test_invalid_and_refused_requests_leave_nothing_behind(services: Services) -> None:
    await services.admin.configure(guild_id=GUILD, actor_id=1, banned_words=["clown"])
    for request, error in [
        (ImagineRequest("", guild_id=GUILD, user_id=USER, count=1), InvalidRequest),
        (ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1, width=4000), InvalidRequest),
        (ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1, steps=0), InvalidRequest),
        (ImagineRequest("a fox --seed -4", guild_id=GUILD, user_id=USER, count=1), InvalidRequest),
        (ImagineRequest("a sad clown", guild_id=GUILD, user_id=USER, count=1), PolicyRefused),
        (ImagineRequest("a fox \udcff in the snow", guild_id=GUILD, user_id=USER, count=1), InvalidRequest),
    ]:
        with pytest.raises(error):
            await services.jobs.submit(request)
    assert await _count_jobs(services) == 0
    shown = await services.admin.show_quota(guild_id=GUILD, user_id=USER)
    assert shown["used_images"] == 0


async def test_banned_member_is_refused_and_admin_changes_are_audited(services: Services) -> None:
    await services.admin.set_banned(guild_id=GUILD, actor_id=1, user_id=USER, banned=True)
    with pytest.raises(PolicyRefused, match="not allowed"):
        await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))
    await services.admin.set_banned(guild_id=GUILD, actor_id=1, user_id=USER, banned=False)
    await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))
    actions = [entry.action for entry in await services.admin.audit_log(GUILD)]
    assert actions == ["unban", "ban"]


async def test_a_queue_that_cannot_take_the_job_charges_nothing(settings) -> None:  # type: ignore[no-untyped-def]
    from bot.errors import Unavailable
    from bot.services.records import JobRecord
    from migrations import upgrade

    down = settings.model_copy(update={"queue_url": "redis://127.0.0.1:1/0"})  # nothing listens there
    await upgrade(down.db_url)
    services = Services.create(down, expander=None)
    try:
        with pytest.raises(Unavailable, match="nothing was charged"):
            await services.jobs.submit(ImagineRequest("a fox", guild_id=GUILD, user_id=USER, count=1))
        shown = await services.admin.show_quota(guild_id=GUILD, user_id=USER)
        assert shown["used_images"] == 0
        async with services.db.sessions() as session:
            [job] = (await session.execute(select(Job))).scalars().all()
            record = JobRecord.of(job)
        assert record.status == JobStatus.FAILED and "queue is unavailable" in (record.error or "")
    finally:
        await services.close()
