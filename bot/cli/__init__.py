"""`atelier`: one command for the bot, the engine, migrations, local jobs and operations.

The composition root: the only place where settings, the database, the queue and the services are
wired together (wiring.py), one module per command group, and the exit codes mapped once, here.
Nothing of the bot is imported at module level, so `atelier engine` starts the engine without it.
"""

from __future__ import annotations

import sys

DISTRIBUTION = "atelier-discord"  # the name on the package index; the command is `atelier`
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130


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
    import logging

    from bot.cli.commands import build_parser
    from bot.errors import AtelierError, InvalidRequest, Refused
    from engine.config import ConfigError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiosqlite", "alembic.runtime.migration", "httpx", "discord.gateway"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, InvalidRequest) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except Refused as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except AtelierError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
