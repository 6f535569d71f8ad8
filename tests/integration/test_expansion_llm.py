"""The LLM path end to end with the tiny offline chat model: real loading (plain, nf4 and int8 through
bitsandbytes on the CPU), chat template, seeded batched sampling, the guards and the fallback."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
from pathlib import Path

import pytest

from bot.cli import main
from bot.cli.expand import add_bench_expand_arguments, add_expand_arguments, run_bench_expand, run_expand
from bot.services.expansion import ExpansionConfig, ExpansionService, find_style
from bot.services.expansion.llm import LocalLLM
from engine.tiny_llm import build_tiny_llm

PROMPT = "a fox in the snow"


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_llm(tmp_path_factory.mktemp("expansion") / "tiny-llm"))


@pytest.fixture(scope="session")
def plain_llm(tiny_llm: str) -> LocalLLM:
    return LocalLLM(tiny_llm, quantization="none", device="cpu")


def _service(tiny_llm: str, **overrides: object) -> ExpansionService:
    config = ExpansionConfig(mode="llm", model=tiny_llm, quantization="none", device="cpu", max_new_tokens=12)
    for key, value in overrides.items():
        setattr(config, key, value)
    return ExpansionService(config)


def test_the_tiny_model_is_built_once_reproducibly(tiny_llm: str, tmp_path: Path) -> None:
    built = Path(tiny_llm)
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_llm(built) == built and (built / "model.safetensors").stat().st_mtime_ns == stamp
    again = build_tiny_llm(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json"):
        assert (
            hashlib.sha256((again / name).read_bytes()).digest() == hashlib.sha256((built / name).read_bytes()).digest()
        )
    config = json.loads((built / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["num_hidden_layers"] == 2
    template = json.loads((built / "tokenizer_config.json").read_text()).get("chat_template", "")
    assert "<|im_start|>" in template or "<|im_start|>" in (built / "chat_template.jinja").read_text()


def test_chat_template_and_tokenizer_round_trip(plain_llm: LocalLLM) -> None:
    service = ExpansionService(ExpansionConfig(mode="llm"))
    prompt = plain_llm.prompts([service.conversation("一只黑猫坐在窗台上", find_style(None), needs_rendering=True)])[0]
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    ids = plain_llm.tokenizer(prompt).input_ids
    assert plain_llm.tokenizer.decode(ids) == prompt  # byte-level BPE: any text, Chinese included, survives


async def test_gibberish_from_the_model_falls_back_honestly(tiny_llm: str) -> None:
    service = _service(tiny_llm)
    result = await service.expand(PROMPT, style="anime", seed=4)
    assert result.source == "fallback"  # the random model's words fail the guards
    assert result.model_prompt.startswith(f"{PROMPT}, anime style")
    assert service.generate_calls == 2  # the first try and one retry with another seed, then the presets
    assert sum(n for reason, n in service.counters.items() if reason.startswith("rejected")) == 2
    non_english = await service.expand("一只黑猫坐在窗台上", seed=4)
    assert non_english.source == "fallback" and non_english.model_prompt.startswith("一只黑猫坐在窗台上, ")
    await service.aclose()


async def test_concurrent_requests_share_generate_calls(tiny_llm: str) -> None:
    service = _service(tiny_llm, batch_max=8, batch_wait_ms=50)
    requests = 6
    results = await asyncio.gather(*(service.expand(f"{PROMPT} number {i}", seed=i) for i in range(requests)))
    assert [r.member_prompt for r in results] == [f"{PROMPT} number {i}" for i in range(requests)]
    assert service.generated_requests == 2 * requests  # every request tried twice (gibberish both times)
    assert service.generate_calls < requests  # ...in far fewer batched calls
    await service.aclose()


def test_model_replies_are_reproducible_per_seed_whatever_the_batch(plain_llm: LocalLLM) -> None:
    service = ExpansionService(ExpansionConfig(mode="llm"))
    conversation = service.conversation("a fox", find_style(None))
    other = service.conversation("a lighthouse on a cliff at dusk", find_style("cinematic"))
    alone = plain_llm.generate([conversation], [7], max_new_tokens=10)[0]
    batched = plain_llm.generate([other, conversation, conversation], [3, 7, 8], max_new_tokens=10)
    assert alone.new_tokens == 10
    assert batched[1].text == alone.text  # the same seed, whatever shares the batch
    assert batched[2].text != alone.text  # another seed, another reply


def test_nf4_and_int8_run_through_bitsandbytes_on_this_cpu(tiny_llm: str, plain_llm: LocalLLM) -> None:
    import torch

    ids = plain_llm.tokenizer(["a fox in the snow, soft golden light"], return_tensors="pt").input_ids
    with torch.inference_mode():
        reference = plain_llm.model(ids).logits.float().flatten()
    for quantization, layer in (("nf4", "Linear4bit"), ("int8", "Linear8bitLt")):
        llm = LocalLLM(tiny_llm, quantization=quantization, device="cpu")
        assert llm.quantization == quantization
        assert type(llm.model.model.layers[0].mlp.up_proj).__name__ == layer
        with torch.inference_mode():
            logits = llm.model(ids).logits.float().flatten()
        # Quantized, not broken: the same function of the input, up to quantization error.
        assert torch.isfinite(logits).all()
        assert torch.corrcoef(torch.stack([reference, logits]))[0, 1] > 0.9
        assert llm.generate([[{"role": "user", "content": "a fox"}]], [1], max_new_tokens=4)[0].new_tokens == 4


def test_a_quantization_that_fails_loads_unquantized_with_a_warning(
    tiny_llm: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.services.expansion import llm as llm_module

    def unsupported(quantization: str) -> object:
        raise RuntimeError("bitsandbytes has no backend for this device")

    monkeypatch.setattr(llm_module, "_quantization_config", unsupported)
    with caplog.at_level(logging.WARNING, logger="bot.services.expansion.llm"):
        llm = LocalLLM(tiny_llm, quantization="nf4", device="cpu")
    assert llm.quantization == "none"
    assert "nf4 quantization with bitsandbytes does not work on cpu" in caplog.text


def test_the_cli_expands_and_benchmarks_with_the_tiny_model(
    tiny_llm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models = Path(tiny_llm).parent
    monkeypatch.setenv("ATELIER_MODELS_PATH", str(models))
    monkeypatch.delenv("ATELIER_EXPANSION_MODE", raising=False)
    data = ["--data-dir", str(tmp_path / "data"), "--tiny", "--json"]

    parser = argparse.ArgumentParser()
    add_expand_arguments(parser)
    assert run_expand(parser.parse_args([PROMPT, "--style", "anime", "--seed", "3", *data])) == 0
    single = json.loads(capsys.readouterr().out)
    assert set(single) == {"member_prompt", "model_prompt", "negative", "source", "tokens", "ms"}
    assert single["source"] == "fallback" and single["model_prompt"].startswith(f"{PROMPT}, anime style")

    requests = tmp_path / "requests.txt"
    requests.write_bytes(f"{PROMPT}\n\n一只黑猫坐在窗台上\n".encode() + b"caf\xe9 latte\n")
    assert run_expand(parser.parse_args(["--eval", str(requests), *data])) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["summary"]["count"] == 2 and evaluation["summary"]["fallback_rate"] == 1.0
    assert evaluation["errors"] == [{"line": 4, "error": "not valid UTF-8"}]  # reported, the rest evaluated

    assert main(["expand", "   ", *data]) == 2
    assert capsys.readouterr().err.startswith("error: the prompt is empty")
    assert {"p50_ms", "p95_ms"} <= set(evaluation["summary"])

    # Through the command's entry point, where errors become exit codes: one line, exit 2.
    assert main(["expand", PROMPT, "--style", "nope", *data]) == 2
    assert capsys.readouterr().err.startswith("error: Unknown style “nope”. Styles: ")

    bench = argparse.ArgumentParser()
    add_bench_expand_arguments(bench)
    args = bench.parse_args(["--requests", "4", "--batch", "2", "--max-new-tokens", "6", *data])
    assert run_bench_expand(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quantization"] == "none" and report["mean_new_tokens"] == 6
    assert report["p50_ms"] > 0 and report["new_tokens_per_s"] > 0
    assert report["service"]["generated_requests"] == 8 and report["service"]["generate_calls"] < 8


async def test_the_window_is_counted_with_the_image_models_clip_tokenizer(tiny_llm: str) -> None:
    from transformers import AutoTokenizer

    from engine.tiny import write_clip_tokenizer

    directory = Path(tiny_llm).parent / "tiny-clip-tokenizer"
    if not (directory / "tokenizer_config.json").is_file():
        write_clip_tokenizer(directory)
    clip = AutoTokenizer.from_pretrained(directory)
    service = ExpansionService(ExpansionConfig(mode="presets", tokenizer_dir=str(directory)))
    long_prompt = "a lighthouse on a cliff above a stormy sea at dusk with seagulls " * 8
    raw = await service.expand(long_prompt, raw=True)
    expanded = await service.expand("portrait of an old fisherman in a yellow raincoat", style="oil painting")
    for result in (raw, expanded):
        counted = len(clip(result.model_prompt, verbose=False).input_ids)  # start and end tokens included
        assert result.tokens == counted <= 77
    assert long_prompt.startswith(raw.model_prompt) and raw.tokens > 70


def test_the_shipped_qwen_config_is_the_real_architecture() -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from engine.tiny_llm import QWEN_1_5B_CONFIG

    spec = json.loads(QWEN_1_5B_CONFIG.read_text())
    assert spec["hub_id"] == "Qwen/Qwen2.5-1.5B-Instruct"
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = Qwen2ForCausalLM(Qwen2Config(**spec["config"]))
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == 1.54


def test_random_weights_from_a_config_load_and_generate(tmp_path: Path) -> None:
    from engine.tiny_llm import QWEN_1_5B_CONFIG, build_random_llm

    # The full-size path with a shrunken copy of the real config; the vocabulary stays larger than the
    # tokenizer's, as it is for the real one.
    spec = json.loads(QWEN_1_5B_CONFIG.read_text())
    spec["config"].update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    spec["config"].update(vocab_size=4096)
    small = tmp_path / "small.json"
    small.write_text(json.dumps(spec))
    built = build_random_llm(tmp_path / "random", config_file=small)
    llm = LocalLLM(str(built), quantization="none", device="cpu")
    assert llm.model.config.vocab_size == 4096 > len(llm.tokenizer)
    generation = llm.generate([[{"role": "user", "content": "a fox"}]], [3], max_new_tokens=8)[0]
    assert generation.new_tokens == 8  # ids past the tokenizer's vocabulary are counted, not decoded


def test_the_cached_system_prompt_gives_the_replies_of_plain_calls(tiny_llm: str) -> None:
    service = ExpansionService(ExpansionConfig(mode="llm"))
    conversations = [
        service.conversation(prompt, find_style(None)) for prompt in (PROMPT, "a lighthouse on a cliff at dusk", "cat")
    ]
    plain = LocalLLM(tiny_llm, quantization="none", device="cpu", reuse_system_prompt=False)
    cached = LocalLLM(tiny_llm, quantization="none", device="cpu")
    expected = [g.text for g in plain.generate(conversations, [1, 2, 3], max_new_tokens=12)]
    # A batch of rows of different lengths, then one row alone: both continue from one cached system turn.
    assert [g.text for g in cached.generate(conversations, [1, 2, 3], max_new_tokens=12)] == expected
    assert cached.generate(conversations[2:], [3], max_new_tokens=12)[0].text == expected[2]
    assert cached.prefix_hits == 1 and len(cached._prefixes) == 1
    # Conversations with different system turns share nothing: the plain path, the same replies.
    other = [[{"role": "system", "content": "Be brief."}, conversations[0][1]], conversations[1]]
    assert [g.text for g in cached.generate(other, [1, 2], max_new_tokens=12)] == [
        g.text for g in plain.generate(other, [1, 2], max_new_tokens=12)
    ]
