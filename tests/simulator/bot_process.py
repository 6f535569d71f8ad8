"""`python -m tests.simulator.bot_process URL`: `atelier bot`, the real command in a process of its own
(settings from the environment, as in a deployment), talking to the simulator at URL instead of Discord:
what DiscordSimulator.pointed_at does for a client in the test's own process."""

from __future__ import annotations

import sys

import discord
import yarl

from bot.cli import main


def run(argv: list[str]) -> int:
    base_url = argv[0].rstrip("/")
    discord.http.Route.BASE = f"{base_url}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"{base_url.replace('http', 'ws', 1)}/")
    return main(["bot", *argv[1:]])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
