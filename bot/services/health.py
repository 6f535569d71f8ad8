"""The bot's gateway health as a small file a container health check can read without Discord.

A bot process that is up but has lost Discord (a dead gateway, an expired session it cannot resume)
answers no member: only the gateway connection says the bot works. The bot writes whether it is
connected, and when, on every change and every few seconds; the check wants "connected" and recent.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

HEALTH_WRITE_SECONDS = 15.0
# Three missed writes in a row: the process is wedged or gone, whatever the file last said.
HEALTH_MAX_AGE_SECONDS = 3 * HEALTH_WRITE_SECONDS


def health_file(data_dir: Path, host: str | None = None) -> Path:
    """One file per host (container), so bots sharing a data volume never read each other's state."""
    return data_dir / "health" / f"bot-{host or socket.gethostname()}.json"


def write_gateway_health(path: Path, *, connected: bool, now: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as partial:
        json.dump({"connected": connected, "at": time.time() if now is None else now}, partial)
    os.replace(partial.name, path)  # a reader never sees half a file


def gateway_health(path: Path, *, now: float | None = None, max_age: float = HEALTH_MAX_AGE_SECONDS) -> str | None:
    """None when healthy, else the reason in a few words."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"no gateway state at {path}"
    age = (time.time() if now is None else now) - float(state.get("at", 0))
    if age > max_age:
        return f"gateway state is {age:.0f}s old"
    if not state.get("connected"):
        return "not connected to the Discord gateway"
    return None
