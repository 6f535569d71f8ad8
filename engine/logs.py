"""Logging for every Atelier process: quiet unless asked, one JSON object a line if asked, and never the token."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

# Libraries that speak at INFO about things an operator never needs (each SQL statement, each migration step
# already applied, each gateway heartbeat).
CHATTY = ("aiosqlite", "alembic", "httpx", "discord.gateway", "discord.client", "urllib3", "filelock")
# bitsandbytes warns on every CPU-only start that an optional kernels package (which Atelier never installs,
# since it downloads code from a hub) is missing; torchao, on import, that its CUDA extensions and Triton
# are absent on a CPU build, and torch then warns about an API torchao registers its enums with.
NOISY_WARNINGS = ("bitsandbytes", "torchao", "torch.utils._pytree")
HANDLER_NAME = "atelier"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    """Replaces every secret's text wherever a record would print it (message, arguments, traceback)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, "[redacted]")
        record.msg, record.args = text, None
        return True


def configure_logging(level: str | None, log_format: str = "text", *, secrets: Iterable[str] = ()) -> None:
    """``level``: the operator's ATELIER_LOG_LEVEL, or the command's default when they set none."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:  # configured again: replace ours only
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName((level or "WARNING").upper())
    root.setLevel(numeric)
    # Below DEBUG nobody asked for the libraries' chatter either; at DEBUG they get it.
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    for name in NOISY_WARNINGS:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else max(numeric, logging.ERROR))
