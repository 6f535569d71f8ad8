"""TAESD on the tiny pipeline: live previews decoded only when wanted, and the fast final decode."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.config import Settings
from engine.contract import JobSpec
from engine.pipelines.previews import attach_taesd, load_taesd, psnr, resolve_taesd
from engine.pipelines.registry import resolve_model
from engine.pipelines.text_to_image import PipelineOptions, TextToImage
from engine.serve import load_pipeline


class _Sink:
    def __init__(self, *, wanted: bool = True, broken: bool = False) -> None:
        self.wanted = wanted
        self.broken = broken
        self.asked: list[int] = []
        self.previews: list[tuple[int, list[bytes]]] = []

    def wants_preview(self, step: int, total: int) -> bool:
        self.asked.append(step)
        return self.wanted

    def on_preview(self, step: int, total: int, images: list[bytes]) -> None:
        if self.broken:
            raise OSError("disk full")
        self.previews.append((step, images))


@pytest.fixture(scope="module")
def tiny_pipeline(models_dir: Path) -> TextToImage:
    return load_pipeline(Settings(tiny=True, models_path=models_dir))


def _job(seed: int, count: int = 1, steps: int = 4) -> JobSpec:
    return JobSpec("txt2img", "a fox", "a fox", "", "atelier/tiny-sd", 64, 64, steps, 0.0, seed, count=count)


def _pixels(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB")


def test_previews_come_per_job_at_due_steps_and_leave_the_images_alone(tiny_pipeline: TextToImage) -> None:
    jobs = [_job(1), _job(2, count=2)]
    plain = tiny_pipeline.generate(jobs)
    sink = _Sink()
    previewed = tiny_pipeline.generate(jobs, previews=sink)
    # Every second step, never the last (the finished image follows at once).
    assert [step for step, _ in sink.previews] == [2]
    ((_, pictures),) = sink.previews
    sizes = []
    for picture in pictures:
        with Image.open(io.BytesIO(picture)) as image:
            assert image.format == "JPEG"
            sizes.append(image.size)
    assert sizes == [(64, 64), (128, 64)]  # the grid of two side by side, as it will be delivered
    assert [[i.png for i in job] for job in previewed.images] == [[i.png for i in job] for job in plain.images]
    # The scheduler tap is gone after the call: nothing piles up on a scheduler that lives on.
    assert "step" not in vars(tiny_pipeline.pipe.scheduler)


def test_a_preview_nobody_wants_is_never_decoded_and_a_failing_one_fails_nothing(
    tiny_pipeline: TextToImage,
) -> None:
    decoded = tiny_pipeline.previewer.decoded
    unwanted = _Sink(wanted=False)
    tiny_pipeline.generate([_job(3)], previews=unwanted)
    assert unwanted.asked == [2] and tiny_pipeline.previewer.decoded == decoded
    broken = _Sink(broken=True)
    output = tiny_pipeline.generate([_job(3)], previews=broken)
    assert len(output.images[0]) == 1 and not broken.previews


def test_fast_decode_uses_taesd_for_the_final_image(tiny_pipeline: TextToImage, models_dir: Path) -> None:
    source = resolve_taesd(None, tiny_pipeline.pipe, models_dir, tiny=True)
    fast = TextToImage(
        "atelier/tiny-sd", resolve_model("atelier/tiny-sd", models_dir), options=PipelineOptions(warmup=False)
    )
    attach_taesd(fast, source, previews=False, fast_decode=True)
    assert type(fast.pipe.vae).__name__ == "AutoencoderTiny" and fast.previewer is None
    job = _job(5, steps=2)
    full, tiny = _pixels(tiny_pipeline.generate([job]).images[0][0].png), _pixels(fast.generate([job]).images[0][0].png)
    assert full.size == tiny.size == (64, 64)
    # A different decoder of the same latents (random weights here, so no closeness is expected).
    assert psnr(full, tiny) < float("inf")
    assert psnr(full, full) == float("inf")


def test_the_real_taesd_ids_follow_the_latent_space(models_dir: Path) -> None:
    class Sd:
        text_encoder_2 = None

    class Sdxl:
        text_encoder_2 = object()

    assert resolve_taesd(None, Sd(), models_dir, tiny=False) == "madebyollin/taesd"
    assert resolve_taesd(None, Sdxl(), models_dir, tiny=False) == "madebyollin/taesdxl"
    assert resolve_taesd("me/my-taesd", Sdxl(), models_dir, tiny=False) == "me/my-taesd"
    # The tiny one is built offline and loaded back through from_pretrained.
    taesd = load_taesd(resolve_taesd("tiny", Sd(), models_dir, tiny=False), device="cpu", dtype=None)
    assert type(taesd).__name__ == "AutoencoderTiny"
