"""Members' attachments, checked before anything is queued: type, size, dimensions, decompression bombs."""

from __future__ import annotations

import io
import logging
import uuid
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from bot.config import Settings
from bot.errors import InvalidRequest
from bot.services.models import profile_for

log = logging.getLogger(__name__)

ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP"}
MAX_PIXELS = 4096 * 4096
MIN_SIDE = 64


def as_rgb(image: Image.Image) -> Image.Image:
    """The picture as the member sees it, in 8-bit RGB: EXIF orientation applied (phones store photos
    sideways and say so in a tag), 16-bit samples scaled rather than clipped to white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "I" or image.mode.startswith("I;16"):
        image = image.convert("I").point(lambda value: value * (255 / 65535)).convert("L")
    return image.convert("RGB")


def save_upload(
    data: bytes, uploads_dir: Path, *, byte_limit: int, max_side: int, multiple: int = 8
) -> tuple[Path, int, int]:
    """Validate an image and store it as PNG at a size the model takes; returns (path, width, height)."""
    if len(data) > byte_limit:
        raise InvalidRequest("errors.upload_too_large", size=len(data) / 2**20, limit=byte_limit / 2**20)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; treat any bomb warning as an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                image_format = probe.format
                width, height = probe.size
                if image_format not in ALLOWED_FORMATS:
                    raise InvalidRequest("errors.upload_format")
                if width * height > MAX_PIXELS:
                    raise InvalidRequest(
                        "errors.upload_too_many_pixels", width=width, height=height, limit=MAX_PIXELS // 10**6
                    )
                if min(width, height) < MIN_SIDE:
                    raise InvalidRequest("errors.upload_too_small", width=width, height=height, low=MIN_SIDE)
                probe.load()
                image = as_rgb(probe)
    except InvalidRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequest("errors.upload_bomb") from None
    except Exception:
        raise InvalidRequest("errors.upload_unreadable") from None
    scale = min(1.0, max_side / max(image.size))
    new_width = max(multiple, int(image.width * scale) // multiple * multiple)
    new_height = max(multiple, int(image.height * scale) // multiple * multiple)
    if (new_width, new_height) != image.size:
        image = image.resize((new_width, new_height), Image.Resampling.LANCZOS)
    uploads_dir.mkdir(parents=True, exist_ok=True)
    path = uploads_dir / f"{uuid.uuid4().hex}.png"
    image.save(path, format="PNG")
    return path, new_width, new_height


def save_source_image(data: bytes, settings: Settings, *, byte_limit: int) -> tuple[Path, int, int]:
    """A member's image for an edit, a description or a restyle: checked, turned upright, stored at a
    size the configured model takes (at most twice its native side)."""
    profile = profile_for(settings.image_model)
    return save_upload(
        data,
        settings.data_dir / "uploads",
        byte_limit=byte_limit,
        max_side=min(settings.max_side, profile.side * 2),
        multiple=profile.multiple,
    )
