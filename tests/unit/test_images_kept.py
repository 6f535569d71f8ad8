"""Images people keep: uploads read the way their owner sees them, results that other tools can read."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.services.uploads import save_upload
from engine.contract import JobKind, JobSpec
from engine.pngmeta import a1111_parameters, atelier_record, png_with_metadata

LIMIT = 8 * 2**20


def _upload(data: bytes, tmp_path: Path) -> Image.Image:
    path, _, _ = save_upload(data, tmp_path, byte_limit=LIMIT, max_side=1024)
    with Image.open(path) as image:
        return image.convert("RGB")


def test_a_photo_stored_sideways_is_turned_upright_by_its_exif_orientation(tmp_path: Path) -> None:
    # Stored 128 wide and 64 high, red on the left half; orientation 6 says "rotate 90° clockwise to view".
    stored = Image.new("RGB", (128, 64), "blue")
    stored.paste((255, 0, 0), (0, 0, 64, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif, quality=95)
    upright = _upload(buffer.getvalue(), tmp_path)
    assert upright.size == (64, 128)
    top, bottom = np.asarray(upright)[8, 32], np.asarray(upright)[120, 32]
    assert top[0] > 200 and top[2] < 60  # the red half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("level", [0, 16384, 40000, 65535])
def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped_to_white(level: int, tmp_path: Path) -> None:
    deep = Image.fromarray(np.full((64, 64), level, dtype=np.uint16))
    buffer = io.BytesIO()
    deep.save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as reread:
        assert reread.mode.startswith("I")  # the file really holds 16-bit samples
    pixels = np.asarray(_upload(buffer.getvalue(), tmp_path))
    assert abs(int(pixels[10, 10, 0]) - round(level * 255 / 65535)) <= 1


def _spec(**changes: object) -> JobSpec:
    values: dict[str, object] = {
        "kind": JobKind.TEXT_TO_IMAGE,
        "member_prompt": "一只雪中的狐狸",
        "model_prompt": "一只雪中的狐狸, soft light, detailed fur",
        "negative_prompt": "blurry, text",
        "model": "stabilityai/sdxl-turbo",
        "width": 512,
        "height": 768,
        "steps": 4,
        "guidance": 0.0,
        "seed": 7,
    }
    values.update(changes)
    return JobSpec(**values)  # type: ignore[arg-type]


def test_the_png_parameters_are_in_the_a1111_format_and_atelier_keeps_its_own_chunk() -> None:
    spec = _spec()
    png = png_with_metadata(Image.new("RGB", (8, 8)), spec, 12345, sampler="EulerAncestralDiscreteScheduler")
    with Image.open(io.BytesIO(png)) as image:
        text = dict(image.text)
    assert text["parameters"].splitlines() == [
        "一只雪中的狐狸, soft light, detailed fur",
        "Negative prompt: blurry, text",
        "Steps: 4, Sampler: Euler a, CFG scale: 0, Seed: 12345, Size: 512x768, Model: stabilityai/sdxl-turbo",
    ]
    record = atelier_record(text)
    assert record["member_prompt"] == "一只雪中的狐狸" and record["seed"] == 12345
    assert json.loads(text["atelier"]) == record
    assert text["Software"] == "Atelier"


def _zlib_level_flag(png: bytes) -> int:
    """FLEVEL of the first IDAT chunk's zlib header: 0 for zlib levels 0–1, 2 for level 6."""
    offset = 8  # past the signature
    while True:
        length = int.from_bytes(png[offset : offset + 4], "big")
        if png[offset + 4 : offset + 8] == b"IDAT":
            return png[offset + 9] >> 6
        offset += 12 + length


def test_an_engines_png_is_written_at_zlibs_fastest_level_with_the_same_pixels() -> None:
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    fast = png_with_metadata(picture, _spec(), 7)
    plain = png_with_metadata(picture, _spec(), 7, compress_level=6)
    assert (_zlib_level_flag(fast), _zlib_level_flag(plain)) == (0, 2)
    with Image.open(io.BytesIO(fast)) as a, Image.open(io.BytesIO(plain)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(picture))
        assert a.text == b.text


def test_without_a_negative_prompt_a1111_writes_no_negative_line() -> None:
    lines = a1111_parameters(_spec(negative_prompt=""), 1, "MyScheduler").splitlines()
    assert len(lines) == 2 and lines[1].startswith("Steps: 4, Sampler: MyScheduler, CFG scale: 0, Seed: 1,")
