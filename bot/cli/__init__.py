"""`atelier`: one command for the bot, the engine, migrations, local jobs and operations.

The composition root: the only place where settings, the database, the queue and the services are
wired together (wiring.py), one module per command group; every command ends through engine.exits,
where exit codes are mapped once.
Nothing of the bot is imported at module level, so `atelier engine` starts the engine without it.
"""

from __future__ import annotations

import sys

from engine.exits import run_command

DISTRIBUTION = "atelier-discord"  # the name on the package index; the command is `atelier`


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"atelier {version(DISTRIBUTION)}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            print("atelier (not installed)")
        return 0
    if argv[:1] == ["engine"]:
        from engine.__main__ import main as engine_main

        return engine_main(argv[1:], prog="atelier engine")
    return run_command(lambda: _run(argv))


def _run(argv: list[str]) -> int:
    from bot.cli.commands import build_parser
    from bot.cli.wiring import configure_logging_for

    args = build_parser().parse_args(argv)
    configure_logging_for(args)
    return int(args.func(args) or 0)
