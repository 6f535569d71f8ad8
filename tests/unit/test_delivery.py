from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bot.services.delivery import fit_upload, grid
from bot.services.records import JobRecord
from engine.contract import JobSpec


def _noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_small_png_is_sent_as_is() -> None:
    png = _noise_png(32)
    attachment = fit_upload(png, "job", limit=len(png))
    assert attachment.filename == "job.png" and attachment.data == png


def test_png_over_the_upload_limit_is_reencoded_under_it() -> None:
    png = _noise_png(256)  # noise barely compresses: ~200 KB
    limit = len(png) // 3
    attachment = fit_upload(png, "job", limit=limit)
    assert attachment.filename == "job.jpg"
    assert len(attachment.data) <= limit
    with Image.open(io.BytesIO(attachment.data)) as image:
        assert image.format == "JPEG"


def test_grid_places_four_images_two_by_two() -> None:
    tiles = []
    for colour in ("red", "green", "blue", "white"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
        tiles.append(buffer.getvalue())
    with Image.open(io.BytesIO(grid(tiles))) as sheet:
        assert sheet.size == (16, 16)
        assert sheet.getpixel((12, 12)) == (255, 255, 255)
        assert sheet.getpixel((12, 2)) == (0, 128, 0)


def test_the_fast_sheet_has_the_same_pixels_as_pillows_default() -> None:
    import numpy as np

    tiles = []
    for seed in range(4):
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
            buffer, format="PNG"
        )
        tiles.append(buffer.getvalue())
    fast, default = grid(tiles), grid(tiles, compress_level=6)
    assert fast != default  # encoded differently…
    with Image.open(io.BytesIO(fast)) as one, Image.open(io.BytesIO(default)) as other:
        assert np.array_equal(np.asarray(one), np.asarray(other))  # …to the same pixels


def test_compute_units_are_megapixels_times_steps_times_images() -> None:
    params = JobSpec(
        kind="txt2img",
        member_prompt="p",
        model_prompt="p",
        negative_prompt="",
        model="m",
        width=1000,
        height=500,
        steps=4,
        guidance=0,
        seed=1,
        count=2,
    )
    assert params.compute_units == 4.0
    upscale = JobSpec(**{**params.to_dict(), "kind": "upscale"})
    assert upscale.compute_units == 2.0


def _job_with_scores(*scores: float | None):  # type: ignore[no-untyped-def]
    from bot.db.models import Image as ImageRow
    from bot.db.models import Job

    job = Job(id="j", member_prompt="p", model_prompt="p", model="m", width=8, height=8, steps=1, seed=1)
    job.images = [
        ImageRow(index=i, path="x", width=8, height=8, size_bytes=1, sha256="0", nsfw_score=s)
        for i, s in enumerate(scores)
    ]
    return JobRecord.of(job)


def test_flagged_results_are_blurred_or_withheld_outside_allowed_nsfw_channels() -> None:
    from bot.services.delivery import flagged_action

    policy = {"threshold": 0.5, "guild_allows_nsfw": False, "channel_nsfw": False, "action": "blur"}
    assert flagged_action(_job_with_scores(0.1, 0.2), **policy) == "show"
    assert flagged_action(_job_with_scores(None), **policy) == "show"  # no classifier configured
    assert flagged_action(_job_with_scores(0.1, 0.9), **policy) == "blur"
    assert flagged_action(_job_with_scores(0.9), **{**policy, "action": "withhold"}) == "withhold"
    assert flagged_action(_job_with_scores(0.9), **{**policy, "guild_allows_nsfw": True}) == "blur"
    assert (
        flagged_action(_job_with_scores(0.9), **{**policy, "guild_allows_nsfw": True, "channel_nsfw": True}) == "show"
    )


def test_blur_removes_detail() -> None:
    from bot.services.delivery import blur

    png = _noise_png(96)
    with Image.open(io.BytesIO(blur(png))) as blurred:
        pixels = np.asarray(blurred, dtype=np.float32)
    with Image.open(io.BytesIO(png)) as original:
        assert pixels.std() < np.asarray(original, dtype=np.float32).std() / 4


def test_the_token_window_counts_from_the_interactions_creation() -> None:
    from datetime import timedelta

    import discord

    from bot.app import token_usable

    created = discord.utils.snowflake_time(discord.utils.time_snowflake(discord.utils.utcnow()))
    assert token_usable(created, created + timedelta(minutes=13, seconds=59))
    assert not token_usable(created, created + timedelta(minutes=14))  # a margin before Discord's 15
