"""The bot's settings: the engine's shared ones (engine.config) plus what only the bot reads."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from engine.config import EngineSettings


class Settings(EngineSettings):
    discord_token: SecretStr | None = None
    owner_ids: list[int] = Field(default_factory=list)
    sync_commands: bool = False

    expansion_mode: Literal["llm", "presets", "raw"] = "presets"
    expansion_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    expansion_quantization: Literal["nf4", "int8", "none"] = "nf4"
    # A request in another script where no LLM renders it (presets mode, or the LLM's fallback): "marian"
    # translates it with a small MarianMT model, "refuse" tells the member their language is not supported.
    translation: Literal["marian", "refuse"] = "marian"
    translation_model: str = "Helsinki-NLP/opus-mt-zh-en"

    # /edit and /describe. Steps unset: 20 (InstructPix2Pix's own default), 2 with the tiny models.
    edit_steps: int | None = None
    edit_guidance: float = 7.5
    edit_image_guidance: float = 1.5
    # Region repair masks: CLIPSeg's probability over which a pixel is the target, then pixels grown
    # around it and the width of the blended edge.
    mask_threshold: float = 0.4
    mask_dilate_px: int = 8
    mask_feather_px: int = 6

    default_images_per_day: int = 50
    max_side: int = 1024
    max_steps: int = 50
    # A job no engine has taken after this long is cancelled and refunded, with a message, rather than
    # left "Queued" for ever (no engine online for its model, say). None: never.
    queued_ttl_seconds: float | None = 3600.0
    # The engine `atelier imagine` starts when none runs stays this long after its queue goes idle, so the
    # next local command finds it warm.
    local_engine_idle_seconds: float = 30.0

    # Sharding, for bots in many guilds: this process runs the shards shard_ids (all of them when unset)
    # of shard_count, and delivers the results of the guilds on those shards. None: one unsharded client.
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: Annotated[list[int] | None, NoDecode] = None

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return [int(part) for part in value.split(",") if part.strip()] or None
            except ValueError:
                raise ValueError(f"expected comma-separated shard numbers such as 0,1, got {value!r}") from None
        return value

    @field_validator("shard_ids")
    @classmethod
    def _within_shard_count(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is None:
            return None
        count = info.data.get("shard_count")
        if count is None:
            raise ValueError("needs ATELIER_SHARD_COUNT too")
        outside = [shard for shard in value if not 0 <= shard < count]
        if outside:
            raise ValueError(f"shard {outside[0]} is not below ATELIER_SHARD_COUNT={count}")
        return sorted(set(value))

    @property
    def shards(self) -> tuple[int, list[int]] | None:
        """(shard count, this process's shards), or None when the bot is not sharded."""
        if self.shard_count is None:
            return None
        return self.shard_count, self.shard_ids or list(range(self.shard_count))
