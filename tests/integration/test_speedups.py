"""UNet speed-ups on the tiny pipeline: torchao weight-only int8 and Pyramid Attention Broadcast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import ConfigError, EngineSettings
from engine.contract import JobSpec
from engine.pipelines.registry import resolve_model
from engine.pipelines.speedups import apply_unet_speedups
from engine.pipelines.text_to_image import PipelineOptions, TextToImage


def _pipeline(models_dir: Path, **options: str) -> TextToImage:
    source = resolve_model("atelier/tiny-sd", models_dir)
    return TextToImage("atelier/tiny-sd", source, options=PipelineOptions(warmup=False, **options))


def _pixels(pipeline: TextToImage, jobs: list[JobSpec]) -> list[np.ndarray]:
    import io

    out = []
    for job in pipeline.generate(jobs).images:
        for image in job:
            with Image.open(io.BytesIO(image.png)) as picture:
                out.append(np.asarray(picture.convert("RGB"), dtype=np.int16))
    return out


def _job(seed: int, steps: int) -> JobSpec:
    return JobSpec("txt2img", "a fox", "a fox", "", "atelier/tiny-sd", 64, 64, steps, 0.0, seed)


def test_int8_weights_and_attention_broadcast_change_the_image_little(models_dir: Path) -> None:
    plain = _pipeline(models_dir)
    jobs = [_job(1, 4), _job(2, 4)]
    expected = _pixels(plain, jobs)
    quantized = _pipeline(models_dir, unet_quantization="int8-weight-only")
    linears = [m for m in quantized.pipe.unet.modules() if isinstance(m, torch.nn.Linear)]
    # torchao swaps each Linear's weight for a quantized tensor subclass; convolutions stay as they are.
    assert linears and all(type(m.weight).__name__ != "Parameter" for m in linears)
    assert type(quantized.pipe.unet.conv_in.weight).__name__ == "Parameter"
    for got, want in zip(_pixels(quantized, jobs), expected, strict=True):
        assert np.abs(got - want).max() <= 16

    broadcast = _pipeline(models_dir, unet_cache="pyramid-attention-broadcast")
    calls = []
    attention = broadcast.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    attention.processor = _Counting(attention.processor, calls)
    first = _pixels(broadcast, jobs)
    # Four steps at timesteps 999, 749, 499, 249: the self-attention runs at some, is reused at others.
    assert 1 <= len(calls) < 4
    # Another batch size and a new schedule start clean: the same images as the first time, alone.
    calls.clear()
    alone = _pixels(broadcast, jobs[:1])
    assert np.array_equal(alone[0], first[0]) and 1 <= len(calls) < 4
    assert first[0].shape == expected[0].shape


class _Counting:
    def __init__(self, processor: object, calls: list[int]) -> None:
        self.processor = processor
        self.calls = calls

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls.append(1)
        return self.processor(*args, **kwargs)  # type: ignore[operator]


def test_unknown_speedups_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="unet quantization is one of"):
        apply_unet_speedups(object(), quantization="int3")
    with pytest.raises(ConfigError, match="ATELIER_UNET_CACHE"):
        EngineSettings(unet_cache="magic")
