"""Per-member budgets. ``reserve`` runs inside the enqueue transaction, so it cannot race."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Guild, Job, Quota, QuotaScope, Usage
from bot.errors import QuotaExceeded
from engine.contract import JobStatus, utcnow

log = logging.getLogger(__name__)


UNLIMITED = -1


@dataclass(frozen=True)
class Budget:
    """None means unlimited. In the stored rows (Guild, Quota) None means "not set here: inherit" and
    UNLIMITED (-1) means unlimited, so an override can lift a server default."""

    images_per_day: int | None = None
    compute_per_day: float | None = None
    max_concurrent: int | None = None
    cooldown_seconds: float | None = None

    def merged_with(self, override: Quota | Guild) -> Budget:
        values = {f.name: getattr(override, f.name) for f in fields(self)}
        return Budget(
            **{k: getattr(self, k) if v is None else None if v == UNLIMITED else v for k, v in values.items()}
        )


def _more_generous(a: Budget, b: Budget) -> Budget:
    def pick(x, y, larger: bool = True):  # type: ignore[no-untyped-def]
        if x is None or y is None:
            return None  # unlimited beats any number
        return max(x, y) if larger else min(x, y)

    return Budget(
        images_per_day=pick(a.images_per_day, b.images_per_day),
        compute_per_day=pick(a.compute_per_day, b.compute_per_day),
        max_concurrent=pick(a.max_concurrent, b.max_concurrent),
        # A shorter cooldown is the more generous one; None here means "no cooldown".
        cooldown_seconds=pick(a.cooldown_seconds, b.cooldown_seconds, larger=False),
    )


def day_of(moment: datetime) -> date:
    return moment.date()


def _usage_summary() -> Select[tuple[int, float, int]]:
    """What a member has used today and how many of their jobs wait or run, in one statement: every
    statement is a trip to the database's thread. Built once, like _OVERRIDES: a submit reads both
    twice (screening, then the reservation), and building a statement cost more than running it."""
    used_today = (
        select(
            func.coalesce(func.sum(Usage.images), 0).label("images"),
            func.coalesce(func.sum(Usage.compute_units), 0.0).label("units"),
        )
        .where(
            Usage.guild_id == bindparam("guild_id"),
            Usage.user_id == bindparam("user_id"),
            Usage.day == bindparam("day"),
            Usage.refunded_at.is_(None),
        )
        .subquery()
    )
    running_now = (
        select(func.count())
        .select_from(Job)
        .where(
            Job.guild_id == bindparam("guild_id"),
            Job.user_id == bindparam("user_id"),
            Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        )
        .scalar_subquery()
    )
    return select(used_today.c.images, used_today.c.units, running_now)


_USAGE_SUMMARY = _usage_summary()
_OVERRIDES = select(Quota).where(Quota.guild_id == bindparam("guild_id"))


def next_reset(moment: datetime) -> datetime:
    return datetime.combine(moment.date() + timedelta(days=1), time.min)


@dataclass(frozen=True)
class UsageSummary:
    images: int
    compute_units: float
    running: int
    budget: Budget
    resets_at: datetime

    @property
    def images_left(self) -> int | None:
        limit = self.budget.images_per_day
        return None if limit is None else max(0, limit - self.images)

    @property
    def compute_left(self) -> float | None:
        limit = self.budget.compute_per_day
        return None if limit is None else max(0.0, round(limit - self.compute_units, 4))


class QuotaService:
    def __init__(self, default_images_per_day: int | None) -> None:
        self.default = Budget(images_per_day=default_images_per_day)

    async def budget(
        self, session: AsyncSession, guild: Guild | None, user_id: int, role_ids: Iterable[int] = ()
    ) -> Budget:
        budget = self.default.merged_with(guild) if guild is not None else self.default
        if guild is None:
            return budget
        overrides = (await session.execute(_OVERRIDES, {"guild_id": guild.id})).scalars().all()
        roles = set(role_ids)
        role_budgets = [budget.merged_with(q) for q in overrides if q.scope == QuotaScope.ROLE and q.target_id in roles]
        if role_budgets:
            best = role_budgets[0]
            for other in role_budgets[1:]:
                best = _more_generous(best, other)
            budget = best
        for q in overrides:
            if q.scope == QuotaScope.USER and q.target_id == user_id:
                budget = budget.merged_with(q)
        return budget

    async def summary(
        self,
        session: AsyncSession,
        guild: Guild | None,
        guild_id: int,
        user_id: int,
        role_ids: Iterable[int] = (),
        now: datetime | None = None,
    ) -> UsageSummary:
        now = now or utcnow()
        values = {"guild_id": guild_id, "user_id": user_id, "day": day_of(now)}
        images, units, running = (await session.execute(_USAGE_SUMMARY, values)).one()
        budget = await self.budget(session, guild, user_id, role_ids)
        return UsageSummary(int(images), float(units), int(running), budget, next_reset(now))

    async def reserve(
        self,
        session: AsyncSession,
        *,
        guild: Guild | None,
        guild_id: int,
        user_id: int,
        job_id: str,
        images: int,
        compute_units: float,
        role_ids: Iterable[int] = (),
        now: datetime | None = None,
    ) -> None:
        """Check every limit and record the usage row; raises QuotaExceeded with the reason. Inside the
        enqueue transaction, so two requests cannot both take the last image left."""
        now = now or utcnow()
        await self.check(session, guild, guild_id, user_id, images, compute_units, role_ids, now)
        session.add(
            Usage(
                job_id=job_id,
                guild_id=guild_id,
                user_id=user_id,
                day=day_of(now),
                images=images,
                compute_units=compute_units,
                created_at=now,
            )
        )

    async def check(
        self,
        session: AsyncSession,
        guild: Guild | None,
        guild_id: int,
        user_id: int,
        images: int,
        compute_units: float,
        role_ids: Iterable[int] = (),
        now: datetime | None = None,
    ) -> None:
        """Raise QuotaExceeded if a request of this size would break a limit now; writes nothing, so a
        request can be refused before any model time is spent on it."""
        now = now or utcnow()
        usage = await self.summary(session, guild, guild_id, user_id, role_ids, now)
        budget = usage.budget
        if budget.max_concurrent is not None and usage.running >= budget.max_concurrent:
            raise QuotaExceeded("quota.concurrent", running=usage.running, limit=budget.max_concurrent)
        if budget.cooldown_seconds:
            last = (
                await session.execute(
                    select(func.max(Usage.created_at)).where(
                        Usage.guild_id == guild_id, Usage.user_id == user_id, Usage.refunded_at.is_(None)
                    )
                )
            ).scalar_one()
            if last is not None and (now - last).total_seconds() < budget.cooldown_seconds:
                ready = last + timedelta(seconds=budget.cooldown_seconds)
                wait = max(1, int((ready - now).total_seconds() + 0.999))
                raise QuotaExceeded("quota.cooldown", wait=wait, resets_at=ready)
        left = usage.images_left
        if left is not None and images > left:
            raise QuotaExceeded(
                "quota.daily_images", left=left, limit=budget.images_per_day, needs=images, resets_at=usage.resets_at
            )
        compute_left = usage.compute_left
        if compute_left is not None and compute_units > compute_left:
            raise QuotaExceeded(
                "quota.daily_compute", left=compute_left, needs=compute_units, resets_at=usage.resets_at
            )
