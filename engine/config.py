"""Settings from ``ATELIER_*`` environment variables and an optional TOML file: the part every process
reads (where the data lives, the queue, the model, the engine's own tuning). The bot adds its own."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODEL = "stabilityai/sdxl-turbo"
TINY_MODEL = "atelier/tiny-sd"


class _TomlWithoutSecrets(TomlConfigSettingsSource):
    """TOML files are shared and committed; the bot token must come from the environment only."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        values.pop("discord_token", None)
        return values


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_", extra="ignore")

    data_dir: Path = Path("data")
    # Models can live apart from the data (a shared volume, a read-only cache).
    models_path: Path | None = None
    database_url: str | None = None
    # None selects the SQLite lease table in the main database; redis://… selects Redis Streams.
    queue_url: str | None = None

    model: str = DEFAULT_MODEL
    tiny: bool = False
    device: str = "auto"
    dtype: str = "auto"

    # Queue: every timeout is named so operators can tune it without code changes.
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    claim_poll_seconds: float = 0.2
    max_attempts: int = 3
    shutdown_grace_seconds: float = 20.0
    # Jobs one pipeline call may take, and how long an engine waits to fill a batch (see the README's
    # engine benchmark for how these were chosen).
    max_batch: int = 8
    batch_wait_ms: float = 50.0
    # Prometheus metrics of an engine on this port; None keeps them off.
    metrics_port: int | None = None

    # An image-classification model (hub id or directory; "tiny" for the offline one) that scores
    # results for NSFW content. Off by default.
    safety_model: str | None = None
    safety_threshold: float = 0.5

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = Path(os.environ.get("ATELIER_CONFIG", "atelier.toml"))
        if toml_path.is_file():
            sources.append(_TomlWithoutSecrets(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'atelier.db'}"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def models_dir(self) -> Path:
        return self.models_path or self.data_dir / "models"

    @property
    def image_model(self) -> str:
        return TINY_MODEL if self.tiny else self.model

    def ensure_dirs(self) -> None:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.models_dir.mkdir(parents=True, exist_ok=True)
