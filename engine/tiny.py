"""Tiny random-weight Stable Diffusion pipeline, built offline with the real diffusers classes.

CI and build machines have no GPU and no hub access. This pipeline is saved with ``save_pretrained``
and loaded back through the same ``from_pretrained`` path as a real model, so every line of the
loading and generation code runs in tests. Its images are noise; their pixels are still determined
by the seed, which is what the tests check.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TINY_SIDE = 64

# Enough English for a BPE tokenizer whose token counts behave like CLIP's on prompts.
_CORPUS = """
a the of and in on with at by for from to is cat dog fox bird horse dragon castle city street forest
mountain lake sea ocean river beach snow rain night dusk dawn sunset sunrise light shadow portrait
landscape painting photo photograph cinematic anime watercolor oil pixel art render detailed lighting
soft hard dramatic golden hour volumetric fog mist cloud sky star moon sun tree flower garden house
lighthouse cliff ship boat car train robot woman man girl boy child old young red blue green yellow
black white orange purple pink brown grey silver gold glowing neon futuristic ancient medieval fantasy
science fiction highly sharp focus depth field bokeh wide angle close up composition texture color
colour vibrant muted pastel warm cold atmosphere mood style illustration concept digital canvas brush
stroke ink sketch charcoal studio background foreground window room interior exterior mountain snowy
""".split()

_MERGES = 400


def _bytes_to_unicode() -> dict[int, str]:
    # The byte-to-character table of GPT-2/CLIP BPE, so every byte has a printable symbol.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def _train_bpe(words: list[str], merges: int) -> tuple[list[str], list[tuple[str, str]]]:
    """A few hundred greedy BPE merges in CLIP's format (``</w>`` marks a word's end)."""
    table = _bytes_to_unicode()
    symbols = list(table.values())
    vocab = symbols + [s + "</w>" for s in symbols]
    split = Counter((*tuple(w[:-1]), w[-1] + "</w>") for w in words)
    learned: list[tuple[str, str]] = []
    for _ in range(merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in split.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += freq
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        learned.append(best)
        vocab.append(best[0] + best[1])
        merged: Counter[tuple[str, ...]] = Counter()
        for word, freq in split.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += freq
        split = merged
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return list(dict.fromkeys(vocab)), learned


def save_atomically(out_dir: Path, write: Callable[[Path], None], marker: str = "config.json") -> Path:
    """Write into a sibling directory, then rename: a crash or a concurrent builder never leaves half a
    model, and when two processes build at once the first rename wins (everything is seeded, so the
    copies are identical)."""
    tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    write(tmp)
    try:
        tmp.replace(out_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out_dir / marker).is_file():
            raise
    return out_dir


def clip_tokenizer():  # type: ignore[no-untyped-def]
    """A CLIP tokenizer with a small BPE vocabulary learnt from the built-in corpus."""
    from transformers import CLIPTokenizer

    vocab, merges = _train_bpe(_CORPUS, _MERGES)
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, merges=merges, model_max_length=77)


def write_clip_tokenizer(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    clip_tokenizer().save_pretrained(out_dir)
    return out_dir


def tiny_sd_modules(tokenizer: Any, *, in_channels: int = 4) -> dict[str, Any]:
    """The tiny SD UNet, VAE and text encoder (call after seeding torch), with ``in_channels`` latent
    channels into the UNet: 4 plain, 8 for InstructPix2Pix (noisy latents + the source's), 9 for
    inpainting (noisy latents + the mask + the masked source's latents)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=TINY_SIDE // 2,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=TINY_SIDE,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder}


def build_tiny_sd(out_dir: Path, *, seed: int = 0) -> Path:
    """Build (once) and save a tiny SD pipeline; returns the directory ``from_pretrained`` takes."""
    if (out_dir / "model_index.json").is_file():
        return out_dir
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    log.info("building the tiny Stable Diffusion pipeline in %s", out_dir)
    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    modules = tiny_sd_modules(tokenizer)
    # Trailing timestep spacing is what SD-Turbo ships with: one- and few-step sampling work.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        **modules,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return save_atomically(out_dir, pipe.save_pretrained, "model_index.json")


def build_tiny_taesd(out_dir: Path, *, seed: int = 0) -> Path:
    """A tiny random AutoencoderTiny for the tiny pipeline's latent space (4 channels, 2× per side),
    saved like madebyollin/taesd so that it loads through the same ``from_pretrained``."""
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from diffusers import AutoencoderTiny

    log.info("building the tiny TAESD in %s", out_dir)
    torch.manual_seed(seed)
    # Two blocks each way: one down- and one upsampling, the tiny VAE's factor of 2.
    taesd = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )
    return save_atomically(out_dir, taesd.save_pretrained)
