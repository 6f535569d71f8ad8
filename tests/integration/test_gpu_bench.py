"""scripts/gpu-bench --tiny: every GPU benchmark's command, run on the CPU with the tiny models, so that
the script a GPU host runs keeps working as the benchmarks change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-bench"


def test_gpu_bench_refuses_bad_usage_with_one_line(tmp_path: Path) -> None:
    refused = subprocess.run([SCRIPT, str(tmp_path), "--fast"], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.strip() == "usage: scripts/gpu-bench OUTDIR [--tiny]"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_gpu_bench_tiny_runs_every_benchmark_and_writes_their_json(tmp_path: Path, models_dir: Path) -> None:
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHON": sys.executable, "ATELIER_DATA_DIR": str(tmp_path / "data")}
    env["ATELIER_MODELS_PATH"] = str(models_dir)
    finished = subprocess.run([SCRIPT, str(out), "--tiny"], env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    names = [entry["name"] for entry in summary["benchmarks"]]
    assert summary["tiny"] and all(entry["rc"] == 0 for entry in summary["benchmarks"])
    reports = {name: json.loads((out / f"{name}.json").read_text()) for name in names}
    engines = [name for name in names if name.startswith("engine-")]
    assert len(engines) == 4
    for name in engines:
        # Same pixels as the plain pipeline, a throughput ratio, and peak memory beside it.
        assert reports[name]["max_abs_diff"] == 0 and reports[name]["speedup"] > 0
        assert reports[name]["rss_peak_mb"] > 0 and "gpu_peak_mb" in reports[name]
    assert reports["engine-sd-turbo-compile"]["compiled_unet"] is True
    # The quantized UNet against the plain one, in the same run.
    quantized = reports["engine-sd-turbo-int8"]["unet_speedup"]
    assert quantized["unet_quantization"] == "int8-weight-only" and quantized["speedup"] > 0
    assert quantized["max_abs_diff"] <= 16
    # The cached system prompt gives plain generate's replies.
    assert reports["expand-compare"]["atelier_same_replies"] == 1.0
    for name in ("expand-nf4-batch1", "expand-nf4-batch8"):
        assert reports[name]["new_tokens_per_s"] > 0 and reports[name]["rss_peak_mb"] > 0
    for name in (n for n in names if n.startswith("taesd-")):
        report = reports[name]
        assert report["full_vae_ms_per_image"] > 0 and report["taesd_ms_per_image"] > 0
        assert report["psnr_db_mean"] > 0 and report["taesd_memory"]["rss_peak_mb"] > 0
        assert "preview_overhead_ms_per_image" in report
    # Edits through the engine against plain calls, and a description's latency, in one run.
    edits = reports["edit-describe"]
    assert edits["speedup"] > 0 and edits["describe_engine_p50_ms"] > 0
    # Scoring on and off, and an explanation against a plain generation of the same job.
    assert "quality" in reports["quality-sdxl-turbo"]
    assert not [name for name, report in reports.items() if "error" in report or "skipped" in report]
