"""Errors a member or operator should read. Their message is the whole, short explanation.

An error is raised with a catalog key and its values (``InvalidRequest("errors.steps_range", low=1,
high=8, got=9)``): ``str(error)`` is the English line the CLI prints, ``error.localized(locale)`` the
member's language in Discord. Text that is not a catalog key is shown as it is, in every language.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot import i18n


class AtelierError(Exception):
    """Base: ``str(error)`` is shown to the member as is. ``exit_code`` and ``label`` say how a command
    ends on it (engine.exits maps every command's errors)."""

    exit_code = 1
    label = "error"

    def __init__(self, message: str, /, **params: Any) -> None:
        self.key = message if i18n.has(message) else None
        self.params = params
        super().__init__(i18n.text(i18n.DEFAULT_LOCALE, message, **params) if self.key else message)

    def localized(self, locale: str | None) -> str:
        return i18n.text(locale, self.key, **self.params) if self.key else str(self)


class InvalidRequest(AtelierError):
    """The request's own options are wrong (size, steps, seed, empty prompt, unknown style…)."""

    exit_code = 2


class Refused(AtelierError):
    """A valid request that policy does not allow now (quota, cooldown, moderation, ban, channel).
    ``resets_at``: when asking again will work (a quota's reset, a cooldown's end), shown to the member."""

    exit_code = 3
    label = "refused"

    def __init__(self, message: str, /, *, resets_at: datetime | None = None, **params: Any) -> None:
        super().__init__(message, **params)
        self.resets_at = resets_at


class QuotaExceeded(Refused):
    pass


class PolicyRefused(Refused):
    pass


class NotFound(AtelierError):
    pass


class Unavailable(AtelierError):
    """A part Atelier needs is down (the queue's Redis, say); nothing was charged."""
