"""The bot's settings: the engine's shared ones (engine.config) plus what only the bot reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

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

    default_images_per_day: int = 50
    max_side: int = 1024
    max_steps: int = 50
    # A job no engine has taken after this long is cancelled and refunded, with a message, rather than
    # left "Queued" for ever (no engine online for its model, say). None: never.
    queued_ttl_seconds: float | None = 3600.0
