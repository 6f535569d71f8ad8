"""What an operator watches while the bot runs: the health check follows the gateway, and the metrics
count what members did, scraped over HTTP the way Prometheus does."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bot.services.health import gateway_health
from engine.metrics import serve_metrics
from tests.e2e.conftest import Harness
from tests.e2e.test_bot import _is_result

HEALTHCHECK = Path(__file__).resolve().parents[2] / "docker" / "healthcheck.py"


def _healthcheck(harness: Harness) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATELIER_DATA_DIR": str(harness.settings.data_dir)}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "bot"], env=env, capture_output=True, text=True, timeout=60
    )


async def test_the_bot_health_check_follows_the_gateway_connection(running: Harness) -> None:
    bot = running.bot
    assert bot is not None
    await bot._write_health()  # what the bot writes on READY and every few seconds
    assert gateway_health(bot.health_path) is None
    healthy = await asyncio.to_thread(_healthcheck, running)
    assert healthy.returncode == 0, healthy.stderr

    await bot.close()  # the process is up, Discord is gone: unhealthy, whatever the database says
    unhealthy = await asyncio.to_thread(_healthcheck, running)
    assert unhealthy.returncode == 1
    assert unhealthy.stderr.strip() == "bot unhealthy: not connected to the Discord gateway"


def _samples(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


async def test_bot_metrics_count_interactions_refusals_deliveries_and_expansion(running: Harness) -> None:
    assert running.services is not None
    server = serve_metrics(running.services.metrics.registry, 0, "127.0.0.1")
    try:
        done = await running.member.slash("imagine", prompt="a lighthouse on a cliff at dusk", seed=3)
        await done.wait_followup(_is_result)
        refused = await running.member.slash("imagine", prompt="a fox", size="4096x4096")
        await refused.wait_followup(lambda m: m.ephemeral)
        assert running.bot is not None
        await running.bot._status_pass()  # the slow timer's work, now
        url = f"http://127.0.0.1:{server.port}/metrics"
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    finally:
        server.close()
    samples = _samples(page)
    assert samples[("atelier_bot_interactions_total", (("name", "imagine"), ("type", "application_command")))] == 2
    assert samples[("atelier_bot_refusals_total", (("reason", "invalid"),))] == 1
    assert samples[("atelier_bot_deliveries_total", (("outcome", "delivered"),))] == 1
    expansions = {labels: n for (name, labels), n in samples.items() if name == "atelier_bot_expansion_seconds_count"}
    assert sum(expansions.values()) == 1  # the refused request never reached expansion
    assert samples[("atelier_bot_gateway_connected", ())] == 1
    assert samples[("atelier_queue_depth", ())] == 0
