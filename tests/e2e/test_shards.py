"""Sharding: two bot processes' worth of clients, one per shard of two, over one database and engine.
The simulator identifies each connection's shard and sends a guild's events and interactions to its
shard alone, as Discord does; each result must come back through the client that got the interaction."""

from __future__ import annotations

import asyncio
import io

import pytest
import redis.asyncio as aioredis
from PIL import Image
from sqlalchemy import select

from bot.app import ShardedAtelierBot, create_bot
from bot.cli.wiring import Services
from bot.db.models import Job
from bot.services.delivery import shard_of
from engine.queue.redis import RedisQueue
from engine.worker import EngineWorker, WorkerConfig
from tests.e2e.conftest import Harness
from tests.redis_server import redis_server  # noqa: F401  (fixture)
from tests.simulator.sim import MessageState


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


async def test_two_bots_and_three_engines_on_one_redis_lose_nothing_and_answer_each_interaction_once(
    harness: Harness, request: pytest.FixtureRequest
) -> None:
    """Two bot clients (one shard each) pump results from one Redis and three engines take the jobs;
    each result is applied once, and posted once, by the client holding its interaction."""
    url = request.getfixturevalue("redis_server")
    flush = aioredis.from_url(url)
    await flush.flushall()
    await flush.aclose()
    guilds = [harness.sim.add_guild(f"shard {shard}", shard=(shard, 2)) for shard in (0, 1)]
    members = [guild.add_member(f"member {i} of shard {shard}") for shard, guild in enumerate(guilds) for i in range(3)]
    harness.settings.sync_commands = True
    bots, made = [], []
    for shard in (0, 1):
        settings = harness.settings.model_copy(update={"shard_count": 2, "shard_ids": [shard], "queue_url": url})
        services = Services.create(settings)
        assert isinstance(services.queue, RedisQueue)
        made.append(services)
        bots.append(create_bot(settings, services, guild_ready_timeout=0.05))
    engine_settings = harness.settings.model_copy(update={"queue_url": url})
    engines = [
        EngineWorker(
            RedisQueue(url, settings=engine_settings),  # engines share nothing with the bots but Redis
            harness.pipeline,  # type: ignore[arg-type]
            WorkerConfig(heartbeat_seconds=0.3, poll_seconds=0.05, batch_wait_ms=0.0),
        )
        for _ in range(3)
    ]
    working = [asyncio.create_task(engine.run()) for engine in engines]
    try:
        async with harness.sim.connect(bots[0]), harness.sim.connect(bots[1]):
            asked = await asyncio.gather(
                *(member.slash("imagine", prompt=f"a harbour at dawn, view {i}") for i, member in enumerate(members))
            )
            for interaction in asked:
                result = await interaction.wait_followup(_is_result, timeout=120)
                with Image.open(io.BytesIO(result.attachments[0].data)) as image:
                    image.load()
            for interaction in asked:
                assert len([m for m in interaction.followups if _is_result(m)]) == 1
            assert not [m for m in harness.sim.messages.values() if m.interaction_id is None and _is_result(m)]
        # Closed: each bot finished the deliveries it had in flight, their message ids recorded.
        async with made[0].db.sessions() as session:
            rows = (await session.execute(select(Job.status, Job.message_id))).all()
        assert len(rows) == len(members)
        assert all(row.status == "succeeded" and row.message_id is not None for row in rows)
        assert sum(engine.completed for engine in engines) == len(members)  # each job ran once
    finally:
        for engine in engines:
            engine.request_stop()
        await asyncio.gather(*working)
        for engine in engines:
            await engine.queue.close()
        for services in made:
            await services.close()
