"""The local LLM: loaded once, called from its own thread, requests batched into one generate call.

Imported only when the LLM is first needed: the bot process starts (and the presets work) without
torch or transformers being loaded.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
)

log = logging.getLogger(__name__)

# bitsandbytes says this on every int8 matmul whose input is float32 (as on CPU); it is expected there.
warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")

QUANTIZATIONS = ("nf4", "int8", "none")
# System prompts whose keys and values are kept (the plain one and the one with the rendering hint).
PREFIX_CACHE_ENTRIES = 4


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int


class SeededSampler(LogitsProcessor):
    """Top-k sampling whose randomness depends only on each row's own seed, whatever else is batched.

    Adding Gumbel noise to the (temperature-scaled, top-k filtered) logits and taking the argmax samples
    exactly from the softmax. Drawing each row's noise from its own generator makes a request
    reproducible from its seed alone, however the batcher happened to group it.
    """

    def __init__(self, seeds: list[int], *, temperature: float, top_k: int) -> None:
        self.seeds = seeds
        self.temperature = temperature
        self.top_k = top_k
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generators is None:
            # On the scores' device: copying a vocabulary-sized noise row from the CPU every step costs
            # more than the step itself for a small model on a GPU.
            self.generators = [torch.Generator(device=scores.device).manual_seed(seed) for seed in self.seeds]
        scores = scores.float() / max(self.temperature, 1e-5)
        if 0 < self.top_k < scores.shape[-1]:
            kth = torch.topk(scores, self.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        noise = torch.stack(
            [torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators]
        ).clamp_(1e-10, 1 - 1e-7)
        return scores - torch.log(-torch.log(noise))


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _quantization_config(quantization: str) -> BitsAndBytesConfig:
    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def _unquantized_dtype(quantization: str, device: str) -> torch.dtype:
    """The dtype of what bitsandbytes leaves unquantized (embeddings, norms, the output head)."""
    if device == "cpu":
        return torch.float32  # CPU matmuls are fastest and exact in float32
    # int8 matmuls take float16 inputs; nf4 computes in bf16, as the rest of the model should.
    return torch.float16 if quantization == "int8" else torch.bfloat16


class LocalLLM:
    """A causal LM with a chat template, quantized with bitsandbytes where asked and where it works."""

    def __init__(
        self, model: str, *, quantization: str = "nf4", device: str = "auto", reuse_system_prompt: bool = True
    ) -> None:
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization is one of {', '.join(QUANTIZATIONS)}, not {quantization!r}")
        self.device = resolve_device(device)
        self.name = model
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"  # decoder-only: pad on the left so generation continues the text
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model, self.quantization = self._load(model, quantization)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_token_id = eos if eos is not None else self.tokenizer.eos_token_id
        # The sampling is SeededSampler's: the checkpoint's own sampling defaults (temperature, top_p...)
        # would only be merged into every call and warned about.
        self.model.generation_config = GenerationConfig(
            eos_token_id=self.eos_token_id, pad_token_id=self.tokenizer.pad_token_id
        )
        self.generate_calls = 0
        # Every request starts with the same system turn: its keys and values are computed once and
        # every batch continues from a copy (see _prefix_cache). `atelier bench expand --compare`
        # measures it against plain generate calls.
        self.reuse_system_prompt = reuse_system_prompt
        self._prefixes: OrderedDict[tuple[int, ...], DynamicCache] = OrderedDict()
        # transformers 5.2x renamed past_key_values to cache (the old name still works, with a warning).
        forward = inspect.signature(self.model.forward).parameters
        self._cache_argument = "cache" if "cache" in forward else "past_key_values"
        self.prefix_hits = 0
        # The service calls from one thread; the lock keeps a second caller (a benchmark) from interleaving.
        self._lock = threading.Lock()
        log.info("loaded %s (%s) on %s in %.1fs", model, self.quantization, self.device, time.perf_counter() - started)

    def _load(self, model: str, quantization: str) -> tuple[Any, str]:
        if quantization != "none":
            try:
                loaded = AutoModelForCausalLM.from_pretrained(
                    model,
                    quantization_config=_quantization_config(quantization),
                    device_map={"": self.device},
                    dtype=_unquantized_dtype(quantization, self.device),
                )
                self._smoke_test(loaded)
                return loaded, quantization
            except Exception as error:  # whatever the cause, bitsandbytes cannot run this model here
                log.warning(
                    "%s quantization with bitsandbytes does not work on %s (%s: %s); loading %s unquantized",
                    quantization,
                    self.device,
                    type(error).__name__,
                    error,
                    model,
                )
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        return loaded.to(self.device), "none"

    def _smoke_test(self, model: Any) -> None:
        """One forward pass: a quantized model that loads but cannot run should fail here, not per request."""
        with torch.inference_mode():
            logits = model(torch.tensor([[0]], device=self.device)).logits
        if not torch.isfinite(logits).all():
            raise RuntimeError("the quantized model produced non-finite logits")

    def prompts(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        return [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]

    def generate(
        self,
        conversations: list[list[dict[str, str]]],
        seeds: list[int],
        *,
        max_new_tokens: int,
        temperature: float = 0.7,
        top_k: int = 40,
    ) -> list[Generation]:
        """One batched generate call. Blocking: callers run it in the LLM's own thread."""
        prompts = self.prompts(conversations)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,  # the sampling is SeededSampler's, so it is reproducible per request
            repetition_penalty=1.1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_token_id,
        )
        sampler = SeededSampler([seed % 2**63 for seed in seeds], temperature=temperature, top_k=top_k)
        with self._lock, torch.inference_mode():
            self.generate_calls += 1
            inputs = self._with_system_prompt_cached(conversations, prompts) if self.reuse_system_prompt else None
            if inputs is None:
                inputs = dict(self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device))
            output = self.model.generate(
                **inputs, generation_config=config, logits_processor=LogitsProcessorList([sampler])
            )
        new = output[:, inputs["input_ids"].shape[1] :].tolist()
        vocabulary = len(self.tokenizer)
        results = []
        for row in new:
            tokens = [t for t in row if t != self.tokenizer.pad_token_id]
            # A model with random weights and a larger vocabulary than its tokenizer (the speed benchmark)
            # samples ids the tokenizer has no text for.
            text = self.tokenizer.decode([t for t in tokens if t < vocabulary], skip_special_tokens=True)
            results.append(Generation(text, len(tokens)))
        return results

    def _with_system_prompt_cached(
        self, conversations: list[list[dict[str, str]]], prompts: list[str]
    ) -> dict[str, Any] | None:
        """Inputs that continue from the shared system turn's cached keys and values, or None when the
        batch does not share one.

        Each row is laid out as [system turn][padding][its own turn]: the padding, masked out, sits
        between the shared part and the rest, so the shared part has the same positions in every row
        and its cache is one tensor repeated over the batch. Positions come from the attention mask, as
        with left padding, so every token sees the positions it would have in a plain call.
        """
        systems = [c[0] for c in conversations if c and c[0].get("role") == "system"]
        if len(systems) != len(conversations) or any(s != systems[0] for s in systems):
            return None
        shared = self.tokenizer.apply_chat_template([systems[0]], tokenize=False, add_generation_prompt=False)
        prefix = self.tokenizer(shared, add_special_tokens=False)["input_ids"]
        rows = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        if not prefix or any(row[: len(prefix)] != prefix or len(row) <= len(prefix) for row in rows):
            return None  # a template whose tokens do not split at the turn: the plain path
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id
        ids, mask = [], []
        for row in rows:
            gap = width - len(row)
            ids.append(prefix + [pad] * gap + row[len(prefix) :])
            mask.append([1] * len(prefix) + [0] * gap + [1] * (len(row) - len(prefix)))
        cache = copy.deepcopy(self._prefix_cache(tuple(prefix)))
        if len(rows) > 1:
            cache.batch_repeat_interleave(len(rows))
        return {
            "input_ids": torch.tensor(ids, device=self.device),
            "attention_mask": torch.tensor(mask, device=self.device),
            self._cache_argument: cache,
        }

    def _prefix_cache(self, prefix: tuple[int, ...]) -> DynamicCache:
        cached = self._prefixes.get(prefix)
        if cached is not None:
            self.prefix_hits += 1
            self._prefixes.move_to_end(prefix)
            return cached
        cache = DynamicCache(config=self.model.config)
        self.model(
            input_ids=torch.tensor([prefix], device=self.device), use_cache=True, **{self._cache_argument: cache}
        )
        self._prefixes[prefix] = cache
        while len(self._prefixes) > PREFIX_CACHE_ENTRIES:
            self._prefixes.popitem(last=False)
        return cache
