"""The `atelier` parser: each command group registers itself from its own module."""

from __future__ import annotations

import argparse

from bot.cli import admin, backup, bench, edit, evaluate, expand, explain, imagine, jobs, serve


def common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tiny", action="store_true", help="use the offline tiny models (no downloads)")
    parser.add_argument("--data-dir", help="overrides ATELIER_DATA_DIR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier: a Discord image bot on your own hardware.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="store_true", help="print the version")  # answered in main()
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (serve, imagine, edit, jobs, admin, backup, expand, evaluate, explain, bench):
        group.register(sub, common)
    return parser
