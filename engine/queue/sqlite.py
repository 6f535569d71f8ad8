"""The single-host queue: a lease table (the ``jobs`` table itself) in the project's SQLite database.

Claims run inside ``BEGIN IMMEDIATE`` (see engine.queue.database), so two engines never take the same job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, String, bindparam, case, cast, func, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from engine.contract import ClaimedJob, JobResult, JobStatus, LeaseState, QueuedJob, utcnow
from engine.queue import ledger
from engine.queue.database import QUEUE_NEWS, RESULT_NEWS, CommitWatch, news_files, nudge
from engine.queue.ledger import jobs, workers

if TYPE_CHECKING:
    from engine.config import EngineSettings
    from engine.queue.database import Database

log = logging.getLogger(__name__)

# Fair pick: a member's k-th due job gets turn (running jobs of that member + k), so the queue is
# served round-robin across members, oldest first within a turn. One member's burst of 40 requests
# cannot push everyone else back.
#
# Ranking every queued row for that would cost the whole queue inside the write lock. The queue is
# read as lanes instead, one per (model, member), each a slice of ix_jobs_lane in age order, and only
# their heads are read at first (see _LaneHeads). The cost grows with the lanes and the claim's
# limit, not with the depth.
#
# The lanes are found with a skip scan (one index seek per lane: the smallest member after the last
# one); each lane's head is the first due job of its slice. The index holds every column read, so no
# table row is read until the pick is made, and the unary + keeps the planner on the lane's slice,
# already in this order (ix_jobs_status_available would read every queued job that is due).
_HEADS_SQL = """
WITH RECURSIVE lanes(model, user_id) AS (
    SELECT m.model, (SELECT min(user_id) FROM jobs WHERE status = 'queued' AND model = m.model)
    FROM ({models}) AS m
    UNION ALL
    SELECT l.model,
           (SELECT min(user_id) FROM jobs WHERE status = 'queued' AND model = l.model AND user_id > l.user_id)
    FROM lanes l WHERE l.user_id IS NOT NULL
),
running AS (
    SELECT user_id, count(*) AS n FROM jobs WHERE status = 'running' GROUP BY user_id
)
SELECT l.model, l.user_id, coalesce(r.n, 0) AS running,
       (SELECT h.id || ' ' || h.created_at FROM jobs h INDEXED BY ix_jobs_lane
        WHERE h.status = 'queued' AND h.model = l.model AND h.user_id = l.user_id AND +h.available_at <= :now
        ORDER BY h.created_at, h.id LIMIT 1) AS head
FROM lanes l LEFT JOIN running r ON r.user_id = l.user_id
WHERE l.user_id IS NOT NULL
"""
# Every model with a queued job, by the same skip scan (for an engine that serves any model).
_ANY_MODEL = """
WITH RECURSIVE models(model) AS (
    SELECT (SELECT min(model) FROM jobs WHERE status = 'queued')
    UNION ALL
    SELECT (SELECT min(model) FROM jobs WHERE status = 'queued' AND model > models.model)
    FROM models WHERE models.model IS NOT NULL
)
SELECT model FROM models WHERE model IS NOT NULL
"""
# The first :take due jobs of one lane; a few of these make one statement.
_LANE_SQL = """
SELECT * FROM (
    SELECT id, user_id, created_at FROM jobs INDEXED BY ix_jobs_lane
    WHERE status = 'queued' AND model = :model{i} AND user_id = :user{i} AND +available_at <= :now
    ORDER BY created_at, id LIMIT :take{i}
)"""
# Whether a claim could take anything. Read through the lanes' index: a queue full of another model's
# jobs must not be read row by row (the unary + keeps the planner off ix_jobs_status_available).
_LOOK_SQL = """
SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY ix_jobs_lane
               WHERE status = 'queued' {models} AND +available_at <= :now),
       EXISTS (SELECT 1 FROM jobs WHERE status = 'running' AND lease_expires_at < :now)
"""
# Built once, for an engine of some models and for one of any.
_LOOKS = {
    True: text(_LOOK_SQL.format(models="AND model IN :models")).bindparams(bindparam("models", expanding=True)),
    False: text(_LOOK_SQL.format(models="")),
}
# Lanes read per statement: SQLite allows 500 terms in one compound SELECT.
_LANES_PER_STATEMENT = 100


# The claim itself, built once (it runs for every job, on its member's path to the image).
_CLAIM = (
    update(jobs)
    .where(jobs.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=JobStatus.RUNNING,
        attempts=jobs.c.attempts + 1,
        lease_owner=bindparam("worker", type_=String) + ":" + cast(jobs.c.attempts + 1, String),
        lease_expires_at=bindparam("expires", type_=DateTime),
        started_at=func.coalesce(jobs.c.started_at, bindparam("now", type_=DateTime)),
    )
    .returning(
        jobs.c.id, jobs.c.user_id, jobs.c.attempts, jobs.c.max_attempts, jobs.c.lease_owner, *ledger.SPEC_COLUMNS
    )
)


def _heads_sql(model_count: int | None) -> str:
    if model_count is None:
        return _HEADS_SQL.format(models=_ANY_MODEL)
    listed = " UNION ALL ".join(f"SELECT :model{i} AS model" for i in range(model_count))
    return _HEADS_SQL.format(models=listed)


def fair_order(candidates: list[tuple[str, int, str]], running: dict[int, int], limit: int) -> list[str]:
    """The first ``limit`` of ``candidates`` (id, member, creation time) in fair order: a member's k-th
    job by age gets turn running + k, ties go to the older job, then to the smaller id."""
    by_member: dict[int, list[tuple[str, str]]] = {}
    for job_id, member, created in candidates:
        by_member.setdefault(member, []).append((created, job_id))
    ranked = []
    for member, waiting in by_member.items():
        for turn, (created, job_id) in enumerate(sorted(waiting), start=1):
            ranked.append((running.get(member, 0) + turn, created, job_id))
    return [job_id for _, _, job_id in sorted(ranked)[:limit]]


class SqliteQueue:
    def __init__(self, database: Database, settings: EngineSettings) -> None:
        self.db = database
        self.settings = settings
        # Engines claim when a job is published (a nudge), at their watch's next look after any other
        # commit, or at the poll interval; a claim takes the write lock only when its look finds work
        # (see _look). An in-memory database has nothing to watch: the worker just polls.
        self._watch = CommitWatch(database.url, topic=QUEUE_NEWS)
        self._news = news_files(database.url)  # worked out once: nudges come after most commits

    def _tell(self, topic: str) -> None:
        path = self._news.get(topic)
        if path is not None:
            nudge(path)

    async def publish(self, job: QueuedJob) -> None:
        """Nothing to send, the committed row is the queue entry: the engines are only told of it."""
        self._tell(QUEUE_NEWS)

    async def claim(self, worker_id: str, limit: int = 1, models: list[str] | None = None) -> list[ClaimedJob]:
        now = utcnow()
        params: dict[str, object] = {
            "now": now,
            "expires": now + timedelta(seconds=self.settings.lease_seconds),
            "limit": limit,
        }
        wanted = list(dict.fromkeys(models or []))
        due, expired = await self._look(now, wanted)
        if not (due or expired):
            return []
        claimed: dict[str, ClaimedJob] = {}
        async with self.db.transaction() as session:
            if expired:
                await self._expire_leases(session, now)
            ids = await self._pick(session, params, wanted)
            if ids:
                # Picking then updating is atomic: the IMMEDIATE transaction holds the write lock throughout.
                values = {"ids": ids, "worker": worker_id, "expires": params["expires"], "now": now}
                rows = await session.execute(_CLAIM, values)
                claimed = {row.id: _claimed(row) for row in rows}
        if expired:
            self._tell(RESULT_NEWS)  # a job out of tries has ended: its member is to be told
        return [claimed[job_id] for job_id in ids]

    async def _look(self, now: datetime, models: list[str]) -> tuple[bool, bool]:
        """(a due job of these models, a lease run out): whether a claim could take anything, and
        whether it must expire leases first. A read, so it never waits for the write lock nor holds
        it: engines look after every commit (most of them a submit, a progress step or a result, not
        work for them), and an empty claim must not make the member whose result is being recorded
        wait behind it."""
        values: dict[str, Any] = {"now": now}
        if models:
            values["models"] = models
        async with self.db.glances() as session:
            due, expired = (await session.execute(_LOOKS[bool(models)], values)).one()
        return bool(due), bool(expired)

    async def _pick(self, session: AsyncSession, params: dict[str, Any], models: list[str]) -> list[str]:
        """The ids of the jobs to claim, in fair order (see fair_order), read lane by lane.

        The lanes' heads come first, with their members' running jobs. A member's head has turn
        running + 1; call B the limit-th smallest of those turns. At least ``limit`` jobs then have a
        turn of B or less, so no job with a later turn can be picked, and a member needs at most
        B - running of its jobs in the ranking: only the few members below B have their lanes read
        further, one bounded read per lane. Fewer members than ``limit`` (no B): each lane's first
        ``limit`` jobs, still a bounded read.
        """
        limit = int(params["limit"])
        listed = {f"model{i}": model for i, model in enumerate(models)}
        heads = (await session.execute(text(_heads_sql(len(models) if models else None)), params | listed)).all()
        running: dict[int, int] = {}
        lanes: dict[int, list[tuple[str, str]]] = {}  # member → (model, head) of each lane with a due job
        for model, member, member_running, head in heads:
            running[member] = member_running
            if head is not None:
                lanes.setdefault(member, []).append((model, head))
        turns = sorted(running[member] + 1 for member in lanes)
        bound = turns[limit - 1] if len(turns) >= limit else None
        candidates: list[tuple[str, int, str]] = []
        deeper: list[tuple[str, int, int]] = []  # (model, member, jobs to read) of the lanes read further
        for member, member_lanes in lanes.items():
            take = limit if bound is None else min(limit, bound - running[member])
            for model, head in member_lanes:
                if take > 1:
                    deeper.append((model, member, take))
                else:
                    job_id, _, created = head.partition(" ")
                    candidates.append((job_id, member, created))
        for start in range(0, len(deeper), _LANES_PER_STATEMENT):
            chunk = deeper[start : start + _LANES_PER_STATEMENT]
            statement = " UNION ALL ".join(_LANE_SQL.format(i=i) for i in range(len(chunk)))
            values: dict[str, Any] = {"now": params["now"]}
            for i, (model, member, take) in enumerate(chunk):
                values |= {f"model{i}": model, f"user{i}": member, f"take{i}": take}
            candidates += [tuple(row) for row in (await session.execute(text(statement), values)).all()]
        return fair_order(candidates, running, limit)

    async def _expire_leases(self, session: AsyncSession, now: datetime) -> None:
        exhausted = (
            (
                await session.execute(
                    update(jobs)
                    .where(
                        jobs.c.status == JobStatus.RUNNING,
                        jobs.c.lease_expires_at < now,
                        (jobs.c.attempts >= jobs.c.max_attempts) | jobs.c.cancel_requested,
                    )
                    .values(
                        status=case((jobs.c.cancel_requested, JobStatus.CANCELLED), else_=JobStatus.FAILED),
                        finished_at=now,
                        lease_owner=None,
                        lease_expires_at=None,
                        error="lease expired: the engine stopped responding",
                    )
                    .returning(jobs.c.id)
                )
            )
            .scalars()
            .all()
        )
        await ledger.refund(session, list(exhausted))
        requeued = (
            (
                await session.execute(
                    update(jobs)
                    .where(jobs.c.status == JobStatus.RUNNING, jobs.c.lease_expires_at < now)
                    .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None, available_at=now)
                    .returning(jobs.c.id)
                )
            )
            .scalars()
            .all()
        )
        if exhausted or requeued:
            log.warning("expired leases: %d requeued, %d ended", len(requeued), len(exhausted))

    async def wait_for_work(self, timeout: float, stop: asyncio.Event) -> bool:
        """Return as soon as a job is published (a nudge of QUEUE_NEWS; any other commit since the last
        return at the watch's next look), when ``stop`` is set, or after ``timeout``; True for a commit.
        Expired leases and retry back-offs come due without a commit; the timeout, the poll interval,
        covers them.

        Each return notes the counter before the caller claims again, so a commit that lands during that
        claim still wakes the next wait. After a nudge the note is taken at the start of the next wait
        instead, so there only a nudge during the claim does (see CommitWatch.wait). The first call only
        takes that first note.
        """
        return await self._watch.wait(timeout, stop)

    async def renew(self, job: ClaimedJob) -> LeaseState:
        expires = utcnow() + timedelta(seconds=self.settings.lease_seconds)
        async with self.db.transaction() as session:
            cancel = (
                await session.execute(
                    update(jobs)
                    .where(
                        jobs.c.id == job.id, jobs.c.status == JobStatus.RUNNING, jobs.c.lease_owner == job.lease_token
                    )
                    .values(lease_expires_at=expires)
                    .returning(jobs.c.cancel_requested)
                )
            ).scalar_one_or_none()
        if cancel is None:
            return LeaseState.LOST
        return LeaseState.CANCELLED if cancel else LeaseState.HELD

    async def progress(self, job: ClaimedJob, step: int, *, preview: bytes | None = None) -> None:
        if preview is not None:
            path = ledger.preview_path(self.settings.images_dir, job.id)
            await asyncio.to_thread(ledger.write_atomically, path, preview)
        async with self.db.transaction() as session:
            await ledger.record_progress(session, job.id, step, lease_owner=job.lease_token)
        self._tell(RESULT_NEWS)

    async def complete(self, job: ClaimedJob, result: JobResult) -> bool:
        return (await self.complete_many([(job, result)]))[0]

    async def complete_many(self, results: list[tuple[ClaimedJob, JobResult]]) -> list[bool]:
        # One transaction for the whole batch: each commit is a write-lock round trip that the bot's
        # own writes queue behind, and the engine's event loop is busy while it lasts.
        images_dir = self.settings.images_dir
        staged = await asyncio.to_thread(
            lambda: [ledger.stage_images(images_dir, job.id, result.images) for job, result in results]
        )
        successes = [
            ledger.Success(job.id, result, files.final, job.lease_token, job.attempt)
            for (job, result), files in zip(results, staged, strict=True)
        ]
        try:
            async with self.db.transaction() as session:
                done = await ledger.record_successes(session, successes)
                # Inside the write lock: no other engine can record this job between the check and the move.
                for files, recorded in zip(staged, done, strict=True):
                    if recorded:
                        files.publish()
        finally:
            for files in staged:
                files.discard()  # what was not moved into place: a lost lease's images, or a failed commit's
        self._tell(RESULT_NEWS)
        for (job, _), recorded in zip(results, done, strict=True):
            if not recorded:
                log.warning("job %s finished after its lease was lost; result discarded", job.id)
        return done

    async def fail(self, job: ClaimedJob, error: str, *, retryable: bool = True) -> str:
        async with self.db.transaction() as session:
            status = await ledger.record_failure(
                session, job.id, error, lease_owner=job.lease_token, retryable=retryable
            )
        self._tell(RESULT_NEWS)
        return status or "lost"

    async def release(self, job: ClaimedJob) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.lease_owner == job.lease_token, jobs.c.status == JobStatus.RUNNING)
                .values(
                    status=JobStatus.QUEUED,
                    attempts=jobs.c.attempts - 1,  # a shutdown is not the job's fault
                    lease_owner=None,
                    lease_expires_at=None,
                    available_at=utcnow(),
                )
            )
        self._tell(QUEUE_NEWS)  # back in the queue, for another engine

    async def cancel(self, job_id: str) -> str | None:
        async with self.db.transaction() as session:
            status = await ledger.cancel(session, job_id)
        self._tell(RESULT_NEWS)  # a queued job ends now; a running one's engine learns at its next renewal
        return status

    async def heartbeat(self, worker_id: str, model: str) -> None:
        now = utcnow()
        statement = sqlite_insert(workers).values(
            id=worker_id, host=socket.gethostname(), pid=os.getpid(), model=model, started_at=now, heartbeat_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=[workers.c.id], set_={"heartbeat_at": now, "model": model, "stopped_at": None}
        )
        async with self.db.transaction() as session:
            await session.execute(statement)

    async def worker_stopped(self, worker_id: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(update(workers).where(workers.c.id == worker_id).values(stopped_at=utcnow()))
        await self._close_watch()  # the worker's loop is over: nothing left to wait for

    async def _close_watch(self) -> None:
        await self._watch.close()

    async def status(self) -> dict[str, Any]:
        now = utcnow()
        alive_after = now - timedelta(seconds=max(10.0, 3 * self.settings.heartbeat_seconds))
        async with self.db.sessions() as session:
            counts = dict((await session.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))).all())
            running = (
                await session.execute(
                    select(
                        jobs.c.id, jobs.c.lease_owner, jobs.c.started_at, jobs.c.model, jobs.c.user_id, jobs.c.attempts
                    ).where(jobs.c.status == JobStatus.RUNNING)
                )
            ).all()
            alive = (await session.execute(select(workers).where(workers.c.stopped_at.is_(None)))).all()
            oldest = (
                await session.execute(select(func.min(jobs.c.created_at)).where(jobs.c.status == JobStatus.QUEUED))
            ).scalar_one()
        return {
            "queue_depth": counts.get(JobStatus.QUEUED, 0),
            "running": len(running),
            "jobs_by_status": counts,
            "oldest_queued_seconds": (now - oldest).total_seconds() if oldest else None,
            "running_jobs": [
                {
                    "job_id": r.id,
                    "worker": (r.lease_owner or "").rsplit(":", 1)[0],
                    "user_id": r.user_id,
                    "model": r.model,
                    "attempt": r.attempts,
                    "started_at": r.started_at,
                }
                for r in running
            ],
            "workers": [
                {
                    "id": w.id,
                    "host": w.host,
                    "pid": w.pid,
                    "model": w.model,
                    "started_at": w.started_at,
                    "heartbeat_at": w.heartbeat_at,
                    "alive": w.heartbeat_at >= alive_after,
                }
                for w in alive
            ],
        }

    async def live_workers(self, model: str) -> int:
        return sum(1 for w in (await self.status())["workers"] if w["alive"] and w["model"] == model)

    async def close(self) -> None:
        await self._close_watch()
        await self.db.dispose()


def _claimed(row: Any) -> ClaimedJob:
    return ClaimedJob(
        id=row.id,
        user_id=row.user_id,
        attempt=row.attempts,
        max_attempts=row.max_attempts,
        lease_token=row.lease_owner or "",
        spec=ledger.spec_of(row),
    )
