"""The bot's Prometheus metrics: what members asked, what was refused and why, what reached Discord.

Counters move where the event happens; the queue's depth and the undeliverable count are read from
the same status an operator sees (`atelier status`) on a slow timer, so scraping costs no queries.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bot.errors import AtelierError, InvalidRequest, NotFound, QuotaExceeded, Refused, Unavailable

EXPANSION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def refusal_reason(error: AtelierError) -> str:
    """A small, fixed set of label values (never the message: that would be one series per prompt)."""
    for kind, reason in (
        (QuotaExceeded, "quota"),
        (Refused, "policy"),
        (InvalidRequest, "invalid"),
        (NotFound, "not_found"),
        (Unavailable, "unavailable"),
    ):
        if isinstance(error, kind):
            return reason
    return "error"


class BotMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.interactions = Counter(
            "atelier_bot_interactions",
            "Interactions received, by type and command (or button family).",
            ["type", "name"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "atelier_bot_refusals", "Requests answered with a refusal, by reason.", ["reason"], registry=self.registry
        )
        self.deliveries = Counter(
            "atelier_bot_deliveries",
            "Attempts to post a result: delivered, retried later, or given up as undeliverable.",
            ["outcome"],
            registry=self.registry,
        )
        self.expansion_seconds = Histogram(
            "atelier_bot_expansion_seconds",
            "Prompt expansion time, by what expanded it (llm, presets, raw…).",
            ["source"],
            buckets=EXPANSION_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("atelier_queue_depth", "Jobs waiting for an engine.", registry=self.registry)
        self.running = Gauge("atelier_queue_running", "Jobs an engine is working on.", registry=self.registry)
        self.gateway_connected = Gauge(
            "atelier_bot_gateway_connected", "1 while the bot holds a live gateway connection.", registry=self.registry
        )
        self.undeliverable = Gauge(
            "atelier_bot_undeliverable_jobs",
            "Results that could not be posted after every retry.",
            registry=self.registry,
        )

    def interaction(self, kind: str, name: str) -> None:
        self.interactions.labels(type=kind, name=name).inc()

    def refused(self, error: AtelierError) -> None:
        self.refusals.labels(reason=refusal_reason(error)).inc()

    def delivery(self, outcome: str) -> None:
        self.deliveries.labels(outcome=outcome).inc()

    def expanded(self, source: str, milliseconds: float) -> None:
        self.expansion_seconds.labels(source=source).observe(milliseconds / 1000)

    def status(self, status: dict[str, Any]) -> None:
        self.queue_depth.set(status.get("queue_depth", 0))
        self.running.set(status.get("running", 0))
        self.undeliverable.set(status.get("undeliverable", 0))
