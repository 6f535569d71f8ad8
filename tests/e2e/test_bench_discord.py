"""The load benchmark runs end to end at a tiny size, so that the command the README gives cannot rot: a
burst with injected 429s, then one delivery at a time through a separate engine process."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_load_benchmark_delivers_every_job_and_takes_the_overhead_apart() -> None:
    command = [sys.executable, "-m", "tests.bench_discord", "--members", "3", "--deliver", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["jobs_queued"], report["lost"], report["invalid_requests"]) == (3, 0, 0)
    assert report["missed_deadline"] == 0 and report["delivered_one_at_a_time"] == 3
    assert 0 < report["deliver_overhead_p50_ms"] <= report["deliver_overhead_p95_ms"]
    stages = report["deliver_stages_p50_ms"]
    assert list(stages) == ["to_queued", "to_claimed", "engine_beyond_compute", "to_follow_up"]
    # Each stage is a span between two moments of one delivery, read off two clocks.
    assert all(value > 0 for value in stages.values()), stages
