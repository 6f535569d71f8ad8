"""`python -m engine` (and `atelier engine`): an engine process, started without loading the bot."""

from __future__ import annotations

import argparse
import asyncio
import logging
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
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiosqlite", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from engine.config import ConfigError, EngineSettings
    from engine.serve import serve

    overrides: dict[str, object] = {}
    if args.tiny:
        overrides["tiny"] = True
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    try:
        settings = EngineSettings(**overrides)  # type: ignore[arg-type]
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(settings, max_batch=args.max_batch, idle_exit_seconds=args.idle_exit))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
