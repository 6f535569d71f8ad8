"""Errors a member or operator should read. Their message is the whole, short explanation."""

from __future__ import annotations

from datetime import datetime


class AtelierError(Exception):
    """Base: ``str(error)`` is shown to the member as is. ``exit_code`` and ``label`` say how a command
    ends on it (engine.exits maps every command's errors)."""

    exit_code = 1
    label = "error"


class InvalidRequest(AtelierError):
    """The request's own options are wrong (size, steps, seed, empty prompt, unknown style…)."""

    exit_code = 2


class Refused(AtelierError):
    """A valid request that policy does not allow now (quota, cooldown, moderation, ban, channel)."""

    exit_code = 3
    label = "refused"

    def __init__(self, message: str, *, resets_at: datetime | None = None) -> None:
        super().__init__(message)
        self.resets_at = resets_at


class QuotaExceeded(Refused):
    pass


class PolicyRefused(Refused):
    pass


class NotFound(AtelierError):
    pass


class Unavailable(AtelierError):
    """A part Atelier needs is down (the queue's Redis, say); nothing was charged."""
