"""`atelier migrate`, `atelier bot` and (listed here, run by the engine itself) `atelier engine`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from bot.cli.wiring import Services, settings_from
from bot.errors import AtelierError, InvalidRequest

log = logging.getLogger(__name__)


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("migrate", help="upgrade the database to the latest schema")
    common(p)
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_migrate)

    # bot.cli.main hands `atelier engine …` to the engine before this parser runs: listed for --help.
    sub.add_parser("engine", help="run a GPU engine worker (same as python -m engine)", add_help=False)

    p = sub.add_parser("bot", help="run the Discord bot")
    common(p)
    p.add_argument("--sync", action="store_true", help="sync slash commands with Discord at start")
    p.set_defaults(func=cmd_bot)


def cmd_migrate(args: argparse.Namespace) -> int:
    from migrations import upgrade_sync

    settings = settings_from(args)
    settings.ensure_dirs()
    upgrade_sync(settings.db_url, args.revision)
    print(f"database at {settings.db_url} is at {args.revision}")
    return 0


def cmd_bot(args: argparse.Namespace) -> int:
    from bot.app import create_bot
    from migrations import upgrade_sync

    settings = settings_from(args)
    if args.sync:
        settings.sync_commands = True
    if settings.discord_token is None:
        raise InvalidRequest("ATELIER_DISCORD_TOKEN is not set")
    settings.ensure_dirs()
    upgrade_sync(settings.db_url)

    async def main() -> None:
        from engine.queue import check_reachable

        await check_reachable(settings)
        services = Services.create(settings)
        bot = create_bot(settings, services)
        metrics_server = None
        if settings.metrics_port is not None:
            from engine.metrics import serve_metrics

            metrics_server = serve_metrics(services.metrics.registry, settings.metrics_port, settings.metrics_host)
        try:
            async with bot, _closed_on_sigterm(bot):
                await bot.start(settings.discord_token.get_secret_value())  # type: ignore[union-attr]
        finally:
            if metrics_server is not None:
                metrics_server.close()
            await services.close()

    import discord

    try:
        asyncio.run(main())
    except (discord.LoginFailure, discord.PrivilegedIntentsRequired, discord.ConnectionClosed) as error:
        raise gateway_failure(error) from None
    return 0


@contextlib.asynccontextmanager
async def _closed_on_sigterm(bot: Any) -> AsyncIterator[None]:
    """SIGTERM (docker stop, systemd) closes the bot as Ctrl-C does: the posts under way finish and are
    recorded, so no result is left claimed but never posted. Only the main thread may take signals;
    elsewhere (a caller running the bot in a thread of its own) the caller keeps them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    closing: set[asyncio.Task[None]] = set()
    loop.add_signal_handler(signal.SIGTERM, lambda: closing.add(asyncio.create_task(bot.close())))
    try:
        yield
        await asyncio.gather(*closing)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


# Discord's gateway close codes after which reconnecting cannot help (discord-api-docs, Gateway close event codes).
FATAL_CLOSE_CODES = {
    4004: "authentication failed: check ATELIER_DISCORD_TOKEN",
    4010: "invalid shard",
    4011: "sharding required: the bot is in too many servers for one connection",
    4012: "invalid API version",
    4013: "invalid intents",
    4014: "disallowed intents: enable the intents Atelier asks for in the Developer Portal",
}


def gateway_failure(error: Exception) -> AtelierError:
    """One line for an operator from what ended the bot's connection to Discord."""
    import discord

    if isinstance(error, discord.LoginFailure):
        return InvalidRequest("Discord refused the bot token: check ATELIER_DISCORD_TOKEN")
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return InvalidRequest(f"Discord closed the connection (4014): {FATAL_CLOSE_CODES[4014]}")
    code = getattr(error, "code", None)
    meaning = FATAL_CLOSE_CODES.get(code, "see Discord's gateway close codes")  # type: ignore[arg-type]
    return AtelierError(f"Discord closed the connection ({code}): {meaning}")
