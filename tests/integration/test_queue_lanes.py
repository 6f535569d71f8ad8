"""The SQLite queue's lane pick against the plain pick that ranks every queued row, on one database,
and `atelier bench queue` as an operator runs it."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.config import Settings
from bot.db.models import Job
from engine.contract import JobStatus, utcnow
from engine.queue.bench import _RankAllQueue
from engine.queue.database import Database
from engine.queue.sqlite import SqliteQueue, fair_order
from tests.factories import add_job
from tests.integration.test_cli import atelier
from tests.redis_server import redis_server  # noqa: F401  (fixture)

MODELS = ["atelier/tiny-sd", "other/model"]


async def test_the_lane_pick_orders_a_mixed_queue_exactly_as_ranking_every_row(
    database: Database, settings: Settings
) -> None:
    rng = random.Random(17)
    ids = []
    for _ in range(160):
        # A few heavy members and many light ones, two models, ties in age, some jobs still backing off.
        member = rng.choice([1, 1, 1, 2, 2, *range(3, 30)])
        ids.append(await add_job(database, user_id=member, model=rng.choice(MODELS), age_seconds=rng.randint(0, 40)))
    later = utcnow() + timedelta(minutes=5)
    async with database.transaction() as session:
        await session.execute(update(Job).where(Job.id.in_(rng.sample(ids, 15))).values(available_at=later))
        # Jobs already running count against their members' turns.
        running = rng.sample(ids, 12)
        await session.execute(update(Job).where(Job.id.in_(running)).values(status=JobStatus.RUNNING))
    lanes, plain = SqliteQueue(database, settings), _RankAllQueue(database, settings)
    for limit in (1, 3, 8, 40, 200):
        for models in ([], MODELS[:1], MODELS[1:], MODELS):
            params = {"now": utcnow(), "limit": limit}
            async with database.sessions() as session:
                expected = await plain._pick(session, params, models)
                picked = await lanes._pick(session, params, models)
            assert picked == expected, (limit, models)
            assert len(picked) == min(limit, len(expected))
    assert len(expected) > 100  # the whole due queue, for the largest limit


def test_fair_order_gives_each_members_kth_job_turn_running_plus_k() -> None:
    candidates = [("a1", 1, "t1"), ("a2", 1, "t2"), ("b1", 2, "t3"), ("c1", 3, "t0"), ("c2", 3, "t4")]
    # Member 3 has two running: its first job waits behind everyone's first and member 1's second.
    assert fair_order(candidates, {3: 2}, 5) == ["a1", "b1", "a2", "c1", "c2"]
    assert fair_order(candidates, {}, 2) == ["c1", "a1"]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_bench_queue_prints_a_row_per_depth(
    backend: str, settings_env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    extra = ["--redis-url", request.getfixturevalue("redis_server")] if backend == "redis" else []
    result = atelier(
        settings_env,
        *("bench", "queue", "--backend", backend, "--depth", "40,120", "--members", "6", "--claims", "4"),
        *("--claim", "3", "--json", *extra),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backend"] == backend
    assert [row["depth"] for row in report["results"]] == [40, 120]
    for row in report["results"]:
        assert row["claimed_per_claim"] == 3  # every claim found a full batch
        assert row["claim_p50_ms"] > 0 and row["enqueue_per_s"] > 0
        assert ("rank_all_p50_ms" in row) == (backend == "sqlite")


def test_bench_queue_refuses_a_bad_depth_in_one_line(settings_env: dict[str, str]) -> None:
    result = atelier(settings_env, "bench", "queue", "--depth", "10,many")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --depth: expected comma-separated whole numbers, got '10,many'"
    ]
