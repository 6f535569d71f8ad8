"""The variant bandit against the real services and database: choices recorded on jobs, admins'
pins and exclusions, members' own choices respected, and what /stats reports after ratings."""

from __future__ import annotations

import pytest

from bot.cli.wiring import Services
from bot.db.models import Image, Job, Rating
from bot.errors import InvalidRequest
from bot.services.bandit import VARIANTS
from bot.services.jobs import ImagineRequest
from bot.ui.messages import variant_lines
from engine.contract import JobStatus


def _request(**options: object) -> ImagineRequest:
    return ImagineRequest(**{"prompt": "a fox in the snow", "guild_id": 9, "user_id": 2, "count": 1, **options})  # type: ignore[arg-type]


async def test_choices_pins_and_exclusions(services: Services) -> None:
    # A server that does not learn variants: nothing chosen, expansion as configured.
    plain = await services.jobs.submit(_request())
    assert plain.variant is None
    await services.bandit.configure(guild_id=9, actor_id=1, learn=True)
    chosen = {(await services.jobs.submit(_request(seed=s))).variant for s in range(12)}
    assert chosen <= set(VARIANTS) and len(chosen) > 1  # with no data yet, it explores
    await services.bandit.configure(guild_id=9, actor_id=1, pin="raw")
    pinned = await services.jobs.submit(_request())
    assert (pinned.variant, pinned.model_prompt) == ("raw", "a fox in the snow")
    await services.bandit.configure(guild_id=9, actor_id=1, pin="auto", disabled=["rich", "presets", "raw"])
    concise = await services.jobs.submit(_request())
    assert concise.variant == "concise"
    # The style's phrase and at most three details.
    assert concise.model_prompt.startswith("a fox in the snow, ") and concise.model_prompt.count(",") <= 4
    # A member who chose raw keeps it, and the job records no variant.
    mine = await services.jobs.submit(_request(raw=True))
    assert (mine.variant, mine.expansion_source) == (None, "raw")
    with pytest.raises(InvalidRequest, match="At least one"):
        await services.bandit.configure(guild_id=9, actor_id=1, disabled=list(VARIANTS))
    with pytest.raises(InvalidRequest, match="Variants are"):
        await services.bandit.configure(guild_id=9, actor_id=1, pin="verbose")


async def test_stats_report_ratings_per_variant(services: Services) -> None:
    await services.bandit.configure(guild_id=9, actor_id=1, learn=True)
    async with services.db.transaction() as session:
        for number, (variant, score) in enumerate([("rich", 5), ("rich", 4), ("raw", 1), ("concise", None)]):
            job = Job(
                id=f"{number:032x}",
                guild_id=9,
                user_id=2,
                member_prompt="a fox",
                model_prompt="a fox",
                model="atelier/tiny-sd",
                width=64,
                height=64,
                steps=2,
                seed=number,
                status=JobStatus.SUCCEEDED,
                variant=variant,
            )
            image = Image(index=0, path="x.png", width=64, height=64, size_bytes=1, sha256="0", score=0.1 * number)
            job.images = [image]
            session.add(job)
            await session.flush()
            if score is not None:
                session.add(Rating(image_id=image.id, job_id=job.id, guild_id=9, user_id=3, emoji="⭐", score=score))
    report = await services.bandit.report(9)
    arms = {arm["variant"]: arm for arm in report["variants"]}
    assert (arms["rich"]["rated"], arms["rich"]["mean_rating"], arms["rich"]["chosen"]) == (2, 4.5, 2)
    assert (arms["raw"]["rated"], arms["raw"]["mean_rating"]) == (1, 1.0)
    assert (arms["concise"]["rated"], arms["concise"]["chosen"]) == (0, 1)
    assert max(arms, key=lambda v: arms[v]["probability_best"]) == "rich"
    shown = variant_lines(report)
    assert "**rich**: 2 used, 2 rated, mean 4.50★" in shown and "**presets**: 0 used" in shown
    # The choice is on the job, so the export carries it.
    assert (await services.jobs.get(f"{0:032x}")).to_dict()["variant"] == "rich"
