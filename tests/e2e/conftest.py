"""The real bot, the real engine (tiny model, in process) and the local Discord simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.app import AtelierBot
from bot.cli.wiring import Services
from bot.config import Settings
from engine.queue.database import Database
from engine.queue.sqlite import SqliteQueue
from engine.serve import load_pipeline
from engine.worker import EngineWorker, WorkerConfig
from tests.simulator import DiscordSimulator, GuildState, MemberState
from tests.simulator.sim import MANAGE_GUILD


@pytest.fixture(scope="session")
def tiny_pipeline(models_dir: Path):  # type: ignore[no-untyped-def]
    return load_pipeline(Settings(tiny=True, models_path=models_dir))


@dataclass
class Harness:
    sim: DiscordSimulator
    settings: Settings
    guild: GuildState
    admin: MemberState
    member: MemberState
    pipeline: object
    bot: AtelierBot | None = None
    services: Services | None = None
    engine_task: asyncio.Task[None] | None = None
    engine: EngineWorker | None = None
    _databases: list[Database] = field(default_factory=list)

    def new_bot(self) -> AtelierBot:
        """A fresh bot process, as after a restart: nothing in memory survives."""
        self.services = Services.create(self.settings)
        self.settings.sync_commands = True
        bot = AtelierBot(self.settings, self.services, guild_ready_timeout=0.05)
        self.bot = bot
        return bot

    def start_engine(self, pipeline: object | None = None, **config: float) -> None:
        """An engine on the queue; ``pipeline`` stands in for the tiny one, ``config`` sets WorkerConfig fields."""
        db = Database(self.settings.db_url)
        self._databases.append(db)
        self.engine = EngineWorker(
            SqliteQueue(db, self.settings),
            pipeline or self.pipeline,  # type: ignore[arg-type]
            WorkerConfig(**{"heartbeat_seconds": 0.3, "poll_seconds": 0.02, **config}),  # type: ignore[arg-type]
        )
        self.engine_task = asyncio.create_task(self.engine.run())

    async def stop_engine(self) -> None:
        if self.engine is not None and self.engine_task is not None:
            self.engine.request_stop()
            await asyncio.wait_for(self.engine_task, 30)
            self.engine = self.engine_task = None

    async def close(self) -> None:
        await self.stop_engine()
        if self.services is not None:
            await self.services.close()
        for db in self._databases:
            await db.dispose()


@pytest.fixture
async def harness(settings: Settings, database: Database, tiny_pipeline) -> AsyncIterator[Harness]:  # type: ignore[no-untyped-def]
    sim = DiscordSimulator()
    await sim.start()
    guild = sim.add_guild()
    guild.add_channel("after-dark", nsfw=True)
    admins = guild.add_role("Admins", permissions=MANAGE_GUILD)
    admin = guild.add_member("ada", roles=[admins])
    member = guild.add_member("bo")
    built = Harness(sim, settings, guild, admin, member, tiny_pipeline)
    try:
        yield built
    finally:
        await built.close()
        await sim.stop()


@pytest.fixture
async def running(harness: Harness) -> AsyncIterator[Harness]:
    """The harness with a connected bot and an engine working the queue."""
    harness.start_engine()
    async with harness.sim.connect(harness.new_bot()):
        yield harness
