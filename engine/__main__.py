"""`python -m engine` (and `atelier engine`): an engine process, started without loading the bot."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def build_parser(prog: str = "python -m engine") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run a GPU engine worker on the job queue.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--tiny", action="store_true", help="use the offline tiny models (no downloads)")
    parser.add_argument("--data-dir", help="overrides ATELIER_DATA_DIR")
    parser.add_argument("--max-batch", type=int, help="jobs run as one pipeline call at most (ATELIER_MAX_BATCH)")
    parser.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m engine") -> int:
    from engine.exits import run_command

    return run_command(lambda: _run(build_parser(prog).parse_args(argv)))


def _run(args: argparse.Namespace) -> int:
    from engine.config import EngineSettings
    from engine.logs import configure_logging
    from engine.serve import serve

    overrides: dict[str, object] = {}
    if args.tiny:
        overrides["tiny"] = True
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    settings = EngineSettings(**overrides)  # type: ignore[arg-type]
    configure_logging("DEBUG" if args.verbose else settings.log_level or "INFO", settings.log_format)
    return asyncio.run(serve(settings, max_batch=args.max_batch, idle_exit_seconds=args.idle_exit))


if __name__ == "__main__":
    sys.exit(main())
