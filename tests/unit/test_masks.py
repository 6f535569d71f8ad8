"""Mask post-processing (threshold, dilation, feathering, coverage) and compositing, without a model."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.pipelines.masks import MaskSettings, composite, dilate, post_process


def _blob(size: int = 64, box: tuple[int, int, int, int] = (20, 24, 36, 40)) -> np.ndarray:
    probabilities = np.full((size, size), 0.05, dtype=np.float32)
    top, left, bottom, right = box
    probabilities[top:bottom, left:right] = 0.9
    return probabilities


def test_dilation_grows_by_the_radius_and_no_further() -> None:
    binary = np.zeros((21, 21), dtype=bool)
    binary[10, 10] = True
    grown = dilate(binary, 3)
    rows, cols = np.nonzero(grown)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (7, 13, 7, 13)
    assert np.array_equal(dilate(binary, 0), binary)


def test_threshold_dilation_and_feather_shape_the_mask() -> None:
    probabilities = _blob()
    hard = post_process(probabilities, (64, 64), MaskSettings(threshold=0.5, dilate_px=0, feather_px=0))
    assert abs(hard.coverage - (16 * 16) / 64**2) < 0.01
    values = np.asarray(hard.soft)
    assert set(np.unique(values)) <= {0, 255}

    soft = post_process(probabilities, (64, 64), MaskSettings(threshold=0.5, dilate_px=4, feather_px=3))
    grown = np.asarray(soft.soft)
    assert soft.coverage == hard.coverage  # coverage is measured before dilation
    assert (grown == 255).sum() > (values == 255).sum()  # dilated: every grown pixel fully generated
    assert ((grown > 0) & (grown < 255)).any()  # feathered: a soft edge outside the grown mask
    assert grown[0, 0] == 0 and grown[63, 63] == 0  # far corners untouched


def test_the_mask_follows_the_image_size_not_the_models() -> None:
    mask = post_process(_blob(), (96, 48), MaskSettings(threshold=0.5, dilate_px=0, feather_px=0))
    assert mask.soft.size == (96, 48)
    rows, cols = np.nonzero(np.asarray(mask.soft))
    # The 64×64 map's box 24..40 (of 64) across, 20..36 down, scaled to 96×48.
    assert abs(cols.min() - 36) <= 2 and abs(cols.max() - 59) <= 2 and abs(rows.min() - 15) <= 2


def test_nothing_found_and_everything_found_are_both_not_found() -> None:
    settings = MaskSettings(threshold=0.5)
    empty = post_process(np.full((32, 32), 0.1, dtype=np.float32), (64, 64), settings)
    everything = post_process(np.full((32, 32), 0.99, dtype=np.float32), (64, 64), settings)
    some = post_process(_blob(32, (8, 8, 20, 20)), (64, 64), settings)
    assert (empty.found(settings), everything.found(settings), some.found(settings)) == (False, False, True)


def test_compositing_keeps_every_source_pixel_outside_the_mask() -> None:
    rng = np.random.default_rng(3)
    source = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    generated = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    mask = post_process(_blob(64, (10, 10, 30, 30)), (64, 48), MaskSettings(threshold=0.5, dilate_px=2, feather_px=2))
    out = np.asarray(composite(source, generated, mask.soft)).astype(int)
    weights = np.asarray(mask.soft)
    outside, inside = weights == 0, weights == 255
    assert np.array_equal(out[outside], np.asarray(source).astype(int)[outside])
    assert np.array_equal(out[inside], np.asarray(generated).astype(int)[inside])
    edge = (weights > 0) & (weights < 255)
    low = np.minimum(np.asarray(source), np.asarray(generated)).astype(int)[edge]
    high = np.maximum(np.asarray(source), np.asarray(generated)).astype(int)[edge]
    assert ((out[edge] >= low - 1) & (out[edge] <= high + 1)).all()  # a blend of the two on the edge

    # A generated image of another size (a model's rounding) is fitted to the source first.
    resized = composite(source, generated.resize((32, 24)), mask.soft)
    assert resized.size == source.size


def test_the_mask_preview_tints_only_the_repaired_region(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io

    from bot.services.delivery import mask_overlay

    Image.new("RGB", (64, 32), (10, 20, 30)).save(tmp_path / "source.png")
    mask = Image.new("L", (64, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    mask.save(tmp_path / "mask.png")
    with Image.open(
        io.BytesIO(mask_overlay(str(tmp_path / "source.png"), str(tmp_path / "mask.png"), side=32))
    ) as preview:
        assert preview.size == (32, 16)  # a small picture, the source's shape
        pixels = np.asarray(preview.convert("RGB")).astype(int)
    assert tuple(pixels[0, 0]) == (10, 20, 30)
    assert pixels[8, 8, 0] > 100
