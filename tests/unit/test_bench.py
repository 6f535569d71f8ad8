"""The benchmark's inputs: shipped architecture configs, arguments, and the burst of jobs it submits."""

from __future__ import annotations

import argparse

import pytest

from engine.bench import BenchSpec, add_bench_engine_arguments
from engine.pipelines.registry import ARCHITECTURES, architecture, build_random_pipeline

# Published parameter counts of the real models' components: a config that builds to exactly these
# is the real architecture, so random weights built from it run at the real model's speed.
REAL_PARAMETERS = {
    "sd-turbo": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sdxl-turbo": {
        "unet": 2_567_463_684,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    },
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_shipped_configs_build_the_real_architectures(arch: str) -> None:
    # The meta device allocates nothing: billions of parameters are described, not created.
    pipe = build_random_pipeline(arch, device="meta")
    counts = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in REAL_PARAMETERS[arch]}
    assert counts == REAL_PARAMETERS[arch]
    assert type(pipe).__name__ == architecture(arch)["pipeline"]
    assert pipe.scheduler.config.timestep_spacing == "trailing"  # what one-step turbo sampling needs
    assert pipe.tokenizer.model_max_length == 77
    assert max(pipe.tokenizer.get_vocab().values()) < pipe.text_encoder.config.vocab_size


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        architecture("sd-fast")


def test_arguments_fit_beside_the_cli_shared_options() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")  # what the CLI's shared options already add
    parser.add_argument("--data-dir")
    add_bench_engine_arguments(parser)
    args = parser.parse_args(["--arch", "sd-turbo", "--random-weights", "--size", "64", "--requests", "2", "--json"])
    assert (args.arch, args.random_weights, args.size, args.requests, args.json) == ("sd-turbo", True, "64", 2, True)
    assert args.max_batch >= 1 and args.batch_wait_ms >= 0 and not args.tiny

    alone = argparse.ArgumentParser()
    add_bench_engine_arguments(alone)
    assert alone.parse_args(["--tiny"]).tiny


def test_a_burst_is_one_batch_key_with_a_seed_per_image() -> None:
    bench = BenchSpec(model="m", arch="tiny", width=64, height=64, steps=2, guidance=0.0, requests=6, count=2)
    jobs = bench.jobs()
    assert len({job.batch_key for job in jobs}) == 1
    seeds = [seed for job in jobs for seed in range(job.seed, job.seed + job.count)]
    assert len(set(seeds)) == 12
    assert len({job.model_prompt for job in jobs}) == 6
    shared = BenchSpec(
        model="m", arch="tiny", width=64, height=64, steps=2, guidance=0.0, requests=6, distinct_prompts=2
    )
    assert len({job.model_prompt for job in shared.jobs()}) == 2


def test_an_engine_started_by_the_cli_gets_no_bot_secrets() -> None:
    from bot.cli.imagine import engine_environment

    env = engine_environment(
        {"PATH": "/bin", "ATELIER_DISCORD_TOKEN": "secret", "ATELIER_DATA_DIR": "/d", "HF_HOME": "/h", "AWS_KEY": "k"}
    )
    assert env == {"PATH": "/bin", "ATELIER_DATA_DIR": "/d", "HF_HOME": "/h"}
