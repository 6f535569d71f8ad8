"""Optional UNet speed-ups: torchao weight-only quantization and diffusers' Pyramid Attention Broadcast.

What diffusers offers and what applies to the UNet models Atelier runs (SD, SDXL and their Turbo
versions, all ``UNet2DConditionModel``):

- diffusers' cache hooks (FasterCache, FirstBlockCache, MagCache, TaylorSeer, Pyramid Attention
  Broadcast) are offered through ``CacheMixin.enable_cache``, which only the transformer models have
  (Flux, Wan, LTX, CogVideoX …); ``UNet2DConditionModel`` has no ``enable_cache``. Applied by hand:
  FirstBlockCache fails (it only knows the registered transformer block classes), FasterCache is
  built around classifier-free guidance and attention over frames; Pyramid Attention Broadcast works
  on the UNet's ``Attention`` modules by name, reusing an attention output for the next step. It saves
  nothing on a one-step Turbo call (every attention is computed once) and needs several steps to pay.
- torchao weight-only quantization (int8, float8) applies to every Linear of the UNet, needs no
  torchvision and no calibration, and is what diffusers' ``TorchAoConfig`` does at load time.

`atelier bench engine --unet-quantization … --unet-cache …` measures either against the plain
pipeline in the same run, with the largest pixel difference between their images.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

UNET_QUANTIZATIONS = ("none", "int8-weight-only", "float8-weight-only")
UNET_CACHES = ("none", "pyramid-attention-broadcast")


def apply_unet_speedups(unet: Any, *, quantization: str = "none", cache: str = "none") -> None:
    if quantization not in UNET_QUANTIZATIONS:
        raise ValueError(f"unet quantization is one of {', '.join(UNET_QUANTIZATIONS)}, not {quantization!r}")
    if cache not in UNET_CACHES:
        raise ValueError(f"unet cache is one of {', '.join(UNET_CACHES)}, not {cache!r}")
    if quantization != "none":
        quantize_unet(unet, quantization)
    if cache == "pyramid-attention-broadcast":
        broadcast_attention(unet)


def quantize_unet(unet: Any, quantization: str) -> None:
    try:
        from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as error:
        raise RuntimeError(f"{quantization} needs torchao: pip install 'atelier-discord[speed]' ({error})") from error
    config = Int8WeightOnlyConfig() if quantization == "int8-weight-only" else Float8WeightOnlyConfig()
    quantize_(unet, config)
    log.info("UNet weights quantized (%s, torchao)", quantization)


class _TimestepWatch:
    """The timestep of the UNet call under way, for the broadcast hook; a new schedule (a timestep no
    lower than the last, or another batch size) clears the attention outputs kept from the last one."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet
        self.timestep = 1000
        self.batch: int | None = None
        unet.register_forward_pre_hook(self._before, with_kwargs=True)

    def _before(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        from diffusers.hooks import HookRegistry

        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        sample = kwargs.get("sample", args[0] if args else None)
        value = int(timestep.flatten()[0]) if hasattr(timestep, "flatten") else int(timestep or 0)
        batch = None if sample is None else int(sample.shape[0])
        if value >= self.timestep or batch != self.batch:
            HookRegistry.check_if_exists_or_initialize(module).reset_stateful_hooks()
        self.timestep, self.batch = value, batch

    def __call__(self) -> int:
        return self.timestep


def broadcast_attention(unet: Any) -> None:
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

    watch = _TimestepWatch(unet)
    config = PyramidAttentionBroadcastConfig(
        # Self-attention (attn1) recomputed every second step, cross-attention (attn2) every third,
        # between timesteps 100 and 800 (the paper's defaults: the first and last steps always run).
        spatial_attention_block_skip_range=2,
        spatial_attention_block_identifiers=("attn1",),
        cross_attention_block_skip_range=3,
        cross_attention_block_identifiers=("attn2",),
        current_timestep_callback=watch,
    )
    apply_pyramid_attention_broadcast(unet, config)
    log.info("UNet attention broadcast across steps (Pyramid Attention Broadcast)")
