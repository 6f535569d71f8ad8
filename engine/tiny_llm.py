"""Offline chat models of the real Qwen2 class: a tiny one for tests and random weights at full size.

The tiny model's replies are gibberish, which is the point: the expansion guards must reject them and
fall back honestly, while every line of the real loading, chat-template, batching and generation code
runs. The full-size model built from ``engine/configs/qwen2.5-1.5b.json`` has random weights too, so its
text is just as useless, but its speed is the real model's: that is what ``atelier bench expand`` needs
on a machine that cannot download weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from engine.tiny import save_atomically

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
QWEN_1_5B_CONFIG = CONFIGS_DIR / "qwen2.5-1.5b.json"
QWEN_0_5B_CONFIG = CONFIGS_DIR / "qwen2.5-0.5b.json"

# Qwen's ChatML layout, so prompts are built exactly as they are for the real model.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A small English corpus in the register the expansion model works in: requests, instructions and
# comma-separated visual detail. It only shapes the tokenizer's merges; the weights stay random.
_CORPUS = """\
You add visual detail to short image requests for an image generator.
Reply with one line of short comma-separated phrases about style, lighting, composition, medium and setting.
a fox in the snow at dusk, soft golden light, cinematic composition, shallow depth of field
a lighthouse on a cliff above a stormy sea, dramatic clouds, long exposure, wide angle lens
portrait of an old fisherman, weathered skin, rim light, dark background, oil painting on canvas
a castle above the clouds, epic fantasy art, towering spires, glowing windows, concept art
a bowl of ramen on a wooden table, food photography, steam rising, warm light, overhead shot
a robot reading in a quiet library, dust in the air, volumetric light, cozy atmosphere
a whale swimming through a sea of stars, surreal, deep blue palette, bioluminescent glow
a red bicycle leaning on a wall in the rain, reflections on wet pavement, muted colors
a black cat sitting on a windowsill, morning light, soft shadows, watercolor wash
a neon city street at night, cyberpunk, rain-soaked, holograms, high contrast, film grain
a mountain lake at sunrise, misty forest, mirror reflection, pastel sky, landscape photography
an ancient temple overgrown with vines, jungle, sunbeams through the canopy, mysterious mood
a knight in silver armor, heroic pose, flowing cape, detailed engraving, studio lighting
a tiny isometric village, miniature diorama, tilt-shift, clean geometry, soft shadows
a cup of coffee and a croissant, cafe table, bokeh background, natural window light
pixel art of a forest cabin, sixteen bit, limited palette, crisp pixels, retro video game
anime style girl with a red umbrella, cherry blossoms, clean line art, vibrant cel shading
a pencil sketch of an owl on a branch, graphite, cross-hatching, sketchbook page
highly detailed, sharp focus, intricate, masterpiece, warm colors, cool tones, vivid colors
Here is the expanded prompt. Sure, I can help with that. The request describes a picture.
"""


def _train_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        # Every byte is in the vocabulary, so any text (Chinese included) tokenizes without unknowns.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_llm(out_dir: Path, *, seed: int = 0) -> Path:
    """Build (once) and save the tiny model and tokenizer; returns the directory from_pretrained takes."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    log.info("building the tiny chat model in %s", out_dir)

    def write(tmp: Path) -> None:
        tokenizer = _train_tokenizer()
        config = Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            tie_word_embeddings=True,
        )
        torch.manual_seed(seed)
        Qwen2ForCausalLM(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return save_atomically(out_dir, write)


def build_random_llm(out_dir: Path, *, config_file: Path = QWEN_1_5B_CONFIG, seed: int = 0) -> Path:
    """A full-size model with the real architecture and random weights, for speed measurements.

    The tokenizer is the tiny one: prompts tokenize to ids the real vocabulary also has, and the random
    model almost never samples its end-of-turn token, so every reply runs to ``max_new_tokens``.
    """
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    spec = json.loads(Path(config_file).read_text(encoding="utf-8"))
    log.info("building %s with random weights in %s", spec.get("hub_id", config_file), out_dir)

    def write(tmp: Path) -> None:
        config = Qwen2Config(**{k: v for k, v in spec["config"].items() if k != "transformers_version"})
        torch.manual_seed(seed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # Initialising 1.5B parameters is much faster on the GPU, and bf16 is how the real weights ship.
        with torch.device(device):
            model = Qwen2ForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(tmp)
        _train_tokenizer().save_pretrained(tmp)

    return save_atomically(out_dir, write)
