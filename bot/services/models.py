"""Defaults per image model: what size and how many steps it was trained to do well."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import TINY_MODEL


@dataclass(frozen=True)
class ModelProfile:
    side: int
    steps: int
    guidance: float
    max_steps: int
    # Images per /imagine unless the server or member says otherwise: a grid where the model is fast.
    grid: int = 1
    # Pixel sizes must be a multiple of this (VAE factor × UNet downsampling).
    multiple: int = 8


_PROFILES = {
    TINY_MODEL: ModelProfile(side=64, steps=2, guidance=0.0, max_steps=50, grid=4),
    "stabilityai/sdxl-turbo": ModelProfile(side=512, steps=1, guidance=0.0, max_steps=8, grid=4),
    "stabilityai/sd-turbo": ModelProfile(side=512, steps=1, guidance=0.0, max_steps=8, grid=4),
}
_GENERIC = ModelProfile(side=1024, steps=25, guidance=5.0, max_steps=80)


def profile_for(model: str) -> ModelProfile:
    return _PROFILES.get(model, _GENERIC)
