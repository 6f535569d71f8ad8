"""A local Discord: gateway websocket and REST on 127.0.0.1 that the unmodified discord.py client uses."""

from tests.simulator.sim import (
    Call,
    ChannelState,
    DiscordSimulator,
    GuildState,
    InteractionRecord,
    MemberState,
    MessageState,
)

__all__ = [
    "Call",
    "ChannelState",
    "DiscordSimulator",
    "GuildState",
    "InteractionRecord",
    "MemberState",
    "MessageState",
]
