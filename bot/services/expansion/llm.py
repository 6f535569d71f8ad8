"""The local LLM: loaded once, run in its own thread, requests batched into one generate call."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int


def _gumbel_processor(seeds: list[int], temperature: float):  # type: ignore[no-untyped-def]
    """Sampling that depends only on each row's own seed, whatever else is in the batch.

    Adding Gumbel noise to the logits and taking the argmax samples exactly from the softmax; drawing
    the noise from a per-row generator makes each request reproducible and independent of batching.
    """
    import torch
    from transformers import LogitsProcessor

    class SeededGumbel(LogitsProcessor):
        def __init__(self) -> None:
            self.generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            scores = scores.float() / temperature
            noise = torch.stack(
                [torch.rand(scores.shape[-1], generator=g).clamp_(1e-9, 1 - 1e-9) for g in self.generators]
            ).to(scores.device)
            return scores - torch.log(-torch.log(noise))

    return SeededGumbel()


class LocalLLM:
    """A causal LM with a chat template, quantized with bitsandbytes where asked and possible."""

    def __init__(self, model: str, *, quantization: str = "nf4", device: str = "auto") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"  # decoder-only: pad on the left so generation continues the text
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        kwargs: dict[str, Any] = {}
        self.quantization = quantization
        if quantization in ("nf4", "int8"):
            from transformers import BitsAndBytesConfig

            if quantization == "nf4":
                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=torch.bfloat16,
                )
            else:
                kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            kwargs["device_map"] = {"": device}
        else:
            kwargs["dtype"] = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model, **kwargs)
        if "device_map" not in kwargs:
            self.model.to(device)
        self.model.eval()
        self.name = model
        self.generate_calls = 0
        self._lock = threading.Lock()
        log.info("loaded %s (%s) on %s in %.1fs", model, quantization, device, time.perf_counter() - started)

    def generate(
        self,
        conversations: list[list[dict[str, str]]],
        seeds: list[int],
        *,
        max_new_tokens: int,
        temperature: float = 0.8,
    ) -> list[Generation]:
        """One batched generate call. Blocking: callers run it in the LLM's own thread."""
        from transformers import LogitsProcessorList

        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        with self._lock, self._torch.inference_mode():
            self.generate_calls += 1
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([_gumbel_processor(seeds, temperature)]),
                pad_token_id=self.tokenizer.pad_token_id,
                repetition_penalty=1.1,
            )
        new = output[:, inputs["input_ids"].shape[1] :]
        results = []
        for row in new:
            tokens = [t for t in row.tolist() if t != self.tokenizer.pad_token_id]
            results.append(Generation(self.tokenizer.decode(tokens, skip_special_tokens=True), len(tokens)))
        return results
