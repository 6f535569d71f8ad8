"""A server learns which way of expanding prompts its members like: Thompson sampling over Beta
posteriors, one arm per expansion variant.

- Variants: ``concise`` (the member's words and the style with a few details), ``rich`` (every detail
  the window holds, from the LLM where the host runs one), ``presets`` (the curated presets only) and
  ``raw`` (the member's words alone).
- Reward: the mean member rating of the job's image, from 1–5 to 0–1, counted as that fraction of a
  success (a "fractional Bernoulli" update). A job nobody rated yet adds its automatic preference
  score as a weak prior: a pseudo-observation of ``PRIOR_WEIGHT``, its reward being where the score
  falls among the server's scores (a rank, so the scorer's scale does not matter).
- Choice: one draw from each enabled arm's Beta, the highest wins; seeded from the image seed, so a
  job's choice can be replayed. Admins can pin a variant (always chosen) or disable some.

tests/unit/test_bandit.py simulates raters with a known best variant and reports how many ratings the
bandit needs to find it.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select

from bot.db.models import AuditEntry, Guild, Image, Job, Rating
from bot.errors import InvalidRequest
from engine.contract import JobKind, JobStatus
from engine.queue.database import Database

log = logging.getLogger(__name__)

VARIANTS = ("concise", "rich", "presets", "raw")
PRIOR_WEIGHT = 0.2  # what an unrated job's automatic score counts, in ratings
CONCISE_DETAILS = 3
HISTORY = 5000  # the most recent jobs a server's posteriors are built from
PROBABILITY_DRAWS = 4000


@dataclass(frozen=True)
class Observation:
    variant: str
    rating: float | None  # mean member rating, 1–5; None when nobody rated it
    score: float | None  # the automatic preference score of its best image


@dataclass(frozen=True)
class Arm:
    variant: str
    alpha: float
    beta: float
    rated: int  # jobs with at least one member rating
    mean_rating: float | None
    chosen: int  # jobs that used it


def rating_reward(rating: float) -> float:
    return min(1.0, max(0.0, (rating - 1.0) / 4.0))


def posteriors(observations: Iterable[Observation], variants: Sequence[str] = VARIANTS) -> dict[str, Arm]:
    """Beta(1, 1) per arm, updated by each rated job's reward and by each unrated job's score rank."""
    observations = list(observations)
    scores = sorted(o.score for o in observations if o.score is not None)
    totals: dict[str, dict[str, float]] = {
        v: {"a": 1.0, "b": 1.0, "rated": 0, "sum": 0.0, "chosen": 0} for v in variants
    }
    for o in observations:
        arm = totals.get(o.variant)
        if arm is None:
            continue
        arm["chosen"] += 1
        if o.rating is not None:
            reward = rating_reward(o.rating)
            arm["a"] += reward
            arm["b"] += 1.0 - reward
            arm["rated"] += 1
            arm["sum"] += o.rating
        elif o.score is not None and len(scores) > 1:
            # Below how many of the server's scores this one lies: 0 for the worst, 1 for the best.
            rank = bisect.bisect_left(scores, o.score) / (len(scores) - 1)
            arm["a"] += PRIOR_WEIGHT * rank
            arm["b"] += PRIOR_WEIGHT * (1.0 - rank)
    return {
        v: Arm(
            v,
            round(t["a"], 4),
            round(t["b"], 4),
            int(t["rated"]),
            round(t["sum"] / t["rated"], 3) if t["rated"] else None,
            int(t["chosen"]),
        )
        for v, t in totals.items()
    }


def thompson_choice(arms: dict[str, Arm], enabled: Sequence[str], rng: np.random.Generator) -> str:
    draws = {v: rng.beta(arms[v].alpha, arms[v].beta) for v in enabled}
    return max(draws, key=lambda v: draws[v])


def probability_best(
    arms: dict[str, Arm], enabled: Sequence[str], *, seed: int = 0, draws: int = PROBABILITY_DRAWS
) -> dict[str, float]:
    """The posterior probability that each arm has the highest mean reward (Monte Carlo, seeded)."""
    if not enabled:
        return {}
    rng = np.random.default_rng(seed)
    samples = np.stack([rng.beta(arms[v].alpha, arms[v].beta, size=draws) for v in enabled])
    wins = np.bincount(samples.argmax(axis=0), minlength=len(enabled))
    return {v: round(float(w) / draws, 4) for v, w in zip(enabled, wins, strict=True)}


def enabled_variants(guild: Guild | None) -> list[str]:
    disabled = set(guild.variants_disabled or []) if guild is not None else set()
    return [v for v in VARIANTS if v not in disabled]


class VariantBandit:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def observations(self, guild_id: int) -> list[Observation]:
        ratings = select(Rating.job_id, func.avg(Rating.score).label("rating")).group_by(Rating.job_id).subquery()
        top_image = select(Image.job_id, Image.score).where(Image.index == 0).subquery()
        query = (
            select(Job.variant, ratings.c.rating, top_image.c.score)
            .outerjoin(ratings, ratings.c.job_id == Job.id)
            .outerjoin(top_image, top_image.c.job_id == Job.id)
            .where(
                Job.guild_id == guild_id,
                Job.variant.is_not(None),
                Job.kind == JobKind.TEXT_TO_IMAGE,
                Job.status == JobStatus.SUCCEEDED,
            )
            .order_by(Job.created_at.desc())
            .limit(HISTORY)
        )
        async with self.db.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            Observation(v, float(r) if r is not None else None, float(s) if s is not None else None) for v, r, s in rows
        ]

    async def choose(self, guild: Guild | None, guild_id: int, seed: int) -> str | None:
        """The variant for a new job of this server; None when the server does not learn variants."""
        if guild is None or not guild.learn_variants:
            return None
        if guild.variant_pinned:
            return guild.variant_pinned
        enabled = enabled_variants(guild)
        if not enabled:
            return None
        arms = posteriors(await self.observations(guild_id))
        return thompson_choice(arms, enabled, np.random.default_rng(seed))

    async def report(self, guild_id: int) -> dict[str, Any]:
        """What /stats shows: each variant's use, rating and chance of being the best."""
        async with self.db.sessions() as session:
            guild = await session.get(Guild, guild_id)
        arms = posteriors(await self.observations(guild_id))
        enabled = enabled_variants(guild)
        best = probability_best(arms, enabled, seed=guild_id % 2**32)
        return {
            "learning": bool(guild and guild.learn_variants),
            "pinned": guild.variant_pinned if guild else None,
            "variants": [
                {
                    "variant": v,
                    "chosen": arms[v].chosen,
                    "rated": arms[v].rated,
                    "mean_rating": arms[v].mean_rating,
                    "probability_best": best.get(v, 0.0),
                    "enabled": v in enabled,
                }
                for v in VARIANTS
            ],
        }

    async def configure(
        self,
        *,
        guild_id: int,
        actor_id: int,
        learn: bool | None = None,
        pin: str | None = None,
        disabled: list[str] | None = None,
    ) -> dict[str, Any]:
        """Turn learning on or off, pin a variant ("auto" unpins) or replace the disabled list."""
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        if pin is not None and pin != "auto" and pin not in VARIANTS:
            raise InvalidRequest("variants.unknown_pin", variants=", ".join(VARIANTS))
        unknown = sorted(set(disabled or []) - set(VARIANTS))
        if unknown:
            raise InvalidRequest("variants.unknown", variant=unknown[0][:30], variants=", ".join(VARIANTS))
        if disabled is not None and not set(VARIANTS) - set(disabled):
            raise InvalidRequest("variants.one_enabled")
        changes: dict[str, Any] = {}
        async with self.db.transaction() as session:
            await session.execute(sqlite_insert(Guild).values(id=guild_id).on_conflict_do_nothing())
            guild = await session.get(Guild, guild_id)
            assert guild is not None
            if learn is not None:
                guild.learn_variants = changes["learn_variants"] = learn
            if pin is not None:
                guild.variant_pinned = changes["variant_pinned"] = None if pin == "auto" else pin
            if disabled is not None:
                guild.variants_disabled = changes["variants_disabled"] = sorted(set(disabled))
            if guild.variant_pinned and guild.variant_pinned in (guild.variants_disabled or []):
                raise InvalidRequest("variants.pinned_disabled", variant=guild.variant_pinned)
            session.add(AuditEntry(guild_id=guild_id, actor_id=actor_id, action="variants", detail=changes))
        return changes


def expansion_options(variant: str) -> dict[str, Any]:
    """How the expansion service draws a variant."""
    return {
        "concise": {"max_details": CONCISE_DETAILS},
        "rich": {},
        "presets": {"use_llm": False},
        "raw": {"raw": True},
    }[variant]
