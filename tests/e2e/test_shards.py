"""Sharding: two bot processes' worth of clients, one per shard of two, over one database and engine.
The simulator identifies each connection's shard and sends a guild's events and interactions to its
shard alone, as Discord does; each result must come back through the client that got the interaction."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from PIL import Image
from sqlalchemy import select

from bot.app import ShardedAtelierBot, create_bot
from bot.cli.wiring import Services
from bot.db.models import Job
from bot.services.delivery import shard_of
from engine.queue.database import Database
from tests.e2e.conftest import Harness
from tests.redis_server import redis_server  # noqa: F401  (fixture)
from tests.simulator.sim import MessageState

ROOT = Path(__file__).resolve().parents[2]


def _is_result(message: MessageState) -> bool:
    return bool(message.attachments) and bool(message.embeds)


async def test_each_shard_group_serves_its_guilds_and_delivers_their_results(harness: Harness) -> None:
    guilds = [harness.sim.add_guild(f"shard {shard}", shard=(shard, 2)) for shard in (0, 1)]
    members = [guild.add_member(f"member of shard {shard}") for shard, guild in enumerate(guilds)]
    harness.settings.sync_commands = True
    bots, made = [], []
    for shard in (0, 1):
        settings = harness.settings.model_copy(update={"shard_count": 2, "shard_ids": [shard]})
        services = Services.create(settings)
        made.append(services)
        bots.append(create_bot(settings, services, guild_ready_timeout=0.05))
    assert all(isinstance(bot, ShardedAtelierBot) for bot in bots)
    harness.start_engine()
    try:
        async with harness.sim.connect(bots[0]), harness.sim.connect(bots[1]):
            for shard, bot in enumerate(bots):
                # Each client knows only the guilds of its own shard.
                assert {g.id for g in bot.guilds} == {g.id for g in harness.sim.guilds if shard_of(g.id, 2) == shard}
                assert bot.shard_count == 2 and list(bot.shards) == [shard]
            asked = [
                await member.slash("imagine", prompt=f"a lighthouse, shard {i}") for i, member in enumerate(members)
            ]
            for shard, interaction in enumerate(asked):
                result = await interaction.wait_followup(_is_result, timeout=60)
                with Image.open(io.BytesIO(result.attachments[0].data)) as image:
                    image.load()
                    assert min(image.size) >= 64
                # A follow-up of the interaction, posted once: by the client holding it. Another client
                # has no interaction to answer and would have posted in the channel instead.
                assert len([m for m in interaction.followups if _is_result(m)]) == 1
                channel_posts = [
                    m
                    for m in harness.sim.messages.values()
                    if m.channel_id == interaction.channel.id and m.interaction_id is None and _is_result(m)
                ]
                assert channel_posts == []
                assert shard_of(guilds[shard].id, 2) == shard
    finally:
        for services in made:
            await services.close()


async def test_the_simulator_closes_a_connection_that_identifies_with_an_impossible_shard(harness: Harness) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(f"ws://127.0.0.1:{harness.sim.port}/") as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": harness.sim.token, "intents": 0, "shard": [2, 2]}})
        closing = await ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 4010


async def test_two_bot_processes_and_three_engines_on_one_redis_lose_nothing_and_answer_each_interaction_once(
    harness: Harness,
    database: Database,
    settings_env: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """`atelier bot` twice (one shard each) and `python -m engine` three times, each a process of its
    own, as deployed: they share nothing but Redis and the database. Every job runs once, and its result
    is posted once, as a follow-up, by the process holding its interaction."""
    url = request.getfixturevalue("redis_server")
    flush = aioredis.from_url(url)
    await flush.flushall()
    await flush.aclose()
    guilds = [harness.sim.add_guild(f"shard {shard}", shard=(shard, 2)) for shard in (0, 1)]
    members = [guild.add_member(f"member {i} of shard {shard}") for shard, guild in enumerate(guilds) for i in range(3)]
    env = {
        **settings_env,
        "ATELIER_TINY": "1",  # the bots ask for the tiny model the engines serve
        "ATELIER_QUEUE_URL": url,
        "ATELIER_DISCORD_TOKEN": harness.sim.token,
        "ATELIER_SYNC_COMMANDS": "1",
        "ATELIER_SHARD_COUNT": "2",
        "ATELIER_BATCH_WAIT_MS": "0",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("bot-0", "bot-1", "engine-0", "engine-1", "engine-2")}
    commands = {
        **{
            f"bot-{shard}": [sys.executable, "-m", "tests.simulator.bot_process", harness.sim.base_url]
            for shard in (0, 1)
        },
        **{f"engine-{i}": [sys.executable, "-m", "engine", "--tiny"] for i in range(3)},
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            shard = {"ATELIER_SHARD_IDS": name.removeprefix("bot-")} if name.startswith("bot-") else {}
            with logs[name].open("wb") as log:
                processes[name] = subprocess.Popen(command, env={**env, **shard}, cwd=ROOT, stdout=log, stderr=log)

        def gone() -> str:
            ended = [name for name, process in processes.items() if process.poll() is not None]
            return "; ".join(f"{name} exited: {logs[name].read_text()[-2000:]}" for name in ended)

        async with asyncio.timeout(180):
            # Both shards connected and the commands synced: the members can use /imagine.
            while harness.sim.connected_shards() != {(0, 2), (1, 2)} or not harness.sim.commands.get(None):
                assert not gone(), gone()
                await asyncio.sleep(0.1)
        asked = await asyncio.gather(
            *(member.slash("imagine", prompt=f"a harbour at dawn, view {i}") for i, member in enumerate(members))
        )
        for interaction in asked:
            result = await interaction.wait_followup(_is_result, timeout=180)
            with Image.open(io.BytesIO(result.attachments[0].data)) as image:
                image.load()
                assert min(image.size) >= 64
        for name in ("bot-0", "bot-1"):
            processes[name].send_signal(signal.SIGTERM)  # as docker stop: deliveries in flight finish
        for name in ("bot-0", "bot-1"):
            # Waited for off the event loop: the simulator runs on it and answers the bots' last calls.
            exit_code = await asyncio.wait_for(asyncio.to_thread(processes[name].wait), 60)
            assert exit_code == 0, logs[name].read_text()[-2000:]
        for interaction in asked:
            assert len([m for m in interaction.followups if _is_result(m)]) == 1
        # Another process holds no interaction to answer: it would have posted in the channel instead.
        assert not [m for m in harness.sim.messages.values() if m.interaction_id is None and _is_result(m)]
        async with database.sessions() as session:
            rows = (await session.execute(select(Job.status, Job.message_id, Job.attempts))).all()
        assert len(rows) == len(members)
        assert all(row.status == "succeeded" and row.message_id is not None for row in rows)
        assert all(row.attempts == 1 for row in rows)  # each job ran once: no lease was lost or stolen
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), 60)
            except TimeoutError:
                process.kill()
                process.wait()
