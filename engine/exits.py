"""Exit codes, mapped once for every command: `atelier …` and `python -m engine` both run through here.

An error that an operator should read carries its exit code (and the word that starts its line) on its
class, so this module needs to know nothing of the bot; anything without one is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2  # a setting, an argument or the machine itself cannot work: fix it and run again
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130


def run_command(action: Callable[[], int | None]) -> int:
    """Run one command; an operator's error becomes its one line on stderr and its exit code."""
    try:
        return int(action() or EXIT_OK)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as error:
        code = getattr(error, "exit_code", None)
        if code is None:
            raise
        label = getattr(error, "label", "error")
        print(f"{label}: {error}", file=sys.stderr)
        return int(code)
