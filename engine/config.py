"""Settings from ``ATELIER_*`` environment variables and an optional TOML file: the part every process
reads (where the data lives, the queue, the model, the engine's own tuning). The bot adds its own."""

from __future__ import annotations

import os
import re
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODEL = "stabilityai/sdxl-turbo"
TINY_MODEL = "atelier/tiny-sd"


class ConfigError(ValueError):
    """A setting (or the machine it names) that cannot work, said in one line that names it."""

    exit_code = 2  # engine.exits: fix the setting and run again


class _TomlWithoutSecrets(TomlConfigSettingsSource):
    """TOML files are shared and committed; the bot token must come from the environment only. A key
    no setting has is a typo that would otherwise be ignored in silence."""

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path) -> None:
        super().__init__(settings_cls, toml_file=toml_file)
        self.path = toml_file

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        values.pop("discord_token", None)
        unknown = sorted(set(values) - set(self.settings_cls.model_fields))
        if unknown:
            raise ConfigError(f"{self.path}: unknown setting {unknown[0]!r}")
        return values


def one_line(error: ValidationError) -> str:
    """pydantic's report of bad settings as one line: which setting, and what is wrong with it."""
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "settings"
    return f"ATELIER_{name.upper()}: {first['msg']} (got {first.get('input')!r})"


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATELIER_", extra="ignore")

    def __init__(self, **values: Any) -> None:
        # One kind of error for a setting that cannot work, whichever source it came from.
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigError(one_line(error)) from None

    data_dir: Path = Path("data")
    # Models can live apart from the data (a shared volume, a read-only cache).
    models_path: Path | None = None
    database_url: str | None = None
    # None selects the SQLite lease table in the main database; redis://… selects Redis Streams.
    queue_url: str | None = None

    model: str = DEFAULT_MODEL
    tiny: bool = False
    device: str = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"

    # None: each command's own default (INFO for the bot and the engine, WARNING for one-shot commands).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    log_format: Literal["text", "json"] = "text"

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
    # Prometheus metrics of this process (the bot's or an engine's) on this port; None keeps them off.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    # Edits, repairs and descriptions (hub ids or directories). inpaint_model unset: the configured
    # image model's own weights inpaint; set it to a dedicated inpainting model for better fills.
    edit_model: str = "timbrooks/instruct-pix2pix"
    mask_model: str = "CIDAS/clipseg-rd64-refined"
    inpaint_model: str | None = None
    caption_model: str = "Salesforce/blip-image-captioning-base"

    # An image-classification model (hub id or directory; "tiny" for the offline one) that scores
    # results for NSFW content. Off by default.
    safety_model: str | None = None
    safety_threshold: float = 0.5

    # Live previews in the member's progress message, decoded with TAESD: the hub id or directory of
    # an AutoencoderTiny (None: madebyollin/taesd, or taesdxl for SDXL models; "tiny": the offline one).
    previews: bool = True
    preview_model: str | None = None
    preview_every_steps: int = Field(default=2, ge=1)
    preview_side: int = Field(default=256, ge=32, le=1024)
    # Decode the final images with TAESD instead of the full VAE: faster, softer detail (see the
    # README's TAESD benchmark for the time and the PSNR between the two decodes).
    fast_decode: bool = False
    # UNet speed-ups (engine.pipelines.speedups): "int8-weight-only" / "float8-weight-only" (torchao),
    # "pyramid-attention-broadcast" (pays only with several steps). Off by default; see the README's figures.
    unet_quantization: Literal["none", "int8-weight-only", "float8-weight-only"] = "none"
    unet_cache: Literal["none", "pyramid-attention-broadcast"] = "none"

    # The preference model that scores every image (hub id or directory; "none" turns scoring off for
    # this engine). With --tiny the offline tiny CLIP stands in. The processor defaults to the model's
    # own, or for PickScore the CLIP-H processor it was trained with.
    scorer_model: str = "yuvalkirstain/PickScore_v1"
    scorer_processor: str | None = None

    @property
    def preference_scorer(self) -> str | None:
        if self.scorer_model.lower() in ("", "none", "off"):
            return None
        return "tiny" if self.tiny else self.scorer_model

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
        named = os.environ.get("ATELIER_CONFIG")
        toml_path = Path(named or "atelier.toml")
        if named and not toml_path.is_file():
            raise ConfigError(f"ATELIER_CONFIG names {toml_path}, which is not a file")
        if toml_path.is_file():
            sources.append(_TomlWithoutSecrets(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @field_validator("queue_url")
    @classmethod
    def _known_queue(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "redis://", "rediss://", "unix://")):
            # Anything else used to fall back to SQLite without a word.
            raise ValueError("must be sqlite:///… or redis://… (unset: the SQLite database)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value

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
        """Create the data directories, or stop with one line when this user cannot write there."""
        for setting, directory in (("ATELIER_DATA_DIR", self.images_dir), ("ATELIER_MODELS_PATH", self.models_dir)):
            try:
                directory.mkdir(parents=True, exist_ok=True)
                # mkdir succeeds on a directory that exists read-only: only writing a file tells.
                with tempfile.TemporaryFile(dir=directory):
                    pass
            except OSError as error:
                raise ConfigError(f"{setting}: cannot write to {directory} ({error.strerror or error})") from None
