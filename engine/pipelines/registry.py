"""Where a model reference becomes a directory or hub id, and which device and dtype to run on."""

from __future__ import annotations

import logging
from pathlib import Path

from bot.config import TINY_MODEL

log = logging.getLogger(__name__)


def resolve_model(model: str, models_dir: Path) -> str:
    """The path or hub id ``from_pretrained`` takes; the tiny model is built here on first use."""
    if model == TINY_MODEL:
        from engine.tiny import build_tiny_sd

        return str(build_tiny_sd(models_dir / "tiny-sd"))
    return model


def pick_device(device: str = "auto", dtype: str = "auto"):  # type: ignore[no-untyped-def]
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        # fp16 VAE decodes of SDXL overflow; bf16 keeps fp32's range at half the memory.
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    return torch.device(device), torch_dtype
