"""Tiny random-weight models of the real classes behind edits, repairs and descriptions, built offline.

Like engine/tiny.py: each is saved with ``save_pretrained`` and loaded back through the same
``from_pretrained`` code as the hub models (timbrooks/instruct-pix2pix, an inpainting pipeline,
CIDAS/clipseg-rd64-refined, Salesforce/blip-image-captioning-base), so every line of that code runs in
tests. Their outputs are noise and their captions gibberish; the pixels are still fixed by the seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.tiny import clip_tokenizer, save_atomically, tiny_sd_modules

log = logging.getLogger(__name__)


def _tiny_sd_components(in_channels: int, seed: int) -> dict[str, Any]:
    """UNet, VAE, text encoder, tokenizer and scheduler of the tiny SD model, with ``in_channels``
    latent channels going into the UNet: 4 plain, 8 for InstructPix2Pix (noisy latents + the source's),
    9 for inpainting (noisy latents + the mask + the masked source's latents)."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler

    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    modules = tiny_sd_modules(tokenizer, in_channels=in_channels)
    # The scheduler timbrooks/instruct-pix2pix ships with.
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    return {
        **modules,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def build_tiny_instruct_pix2pix(out_dir: Path, *, seed: int = 0) -> Path:
    """A StableDiffusionInstructPix2PixPipeline whose UNet takes 8 input channels, as the real one."""
    if (out_dir / "model_index.json").is_file():
        return out_dir
    from diffusers import StableDiffusionInstructPix2PixPipeline

    log.info("building the tiny InstructPix2Pix pipeline in %s", out_dir)
    pipe = StableDiffusionInstructPix2PixPipeline(**_tiny_sd_components(8, seed))
    return save_atomically(out_dir, pipe.save_pretrained, "model_index.json")


def build_tiny_inpainting(out_dir: Path, *, seed: int = 0) -> Path:
    """A StableDiffusionInpaintPipeline whose UNet takes 9 input channels, as the real inpainting models."""
    if (out_dir / "model_index.json").is_file():
        return out_dir
    from diffusers import StableDiffusionInpaintPipeline

    log.info("building the tiny inpainting pipeline in %s", out_dir)
    pipe = StableDiffusionInpaintPipeline(**_tiny_sd_components(9, seed))
    return save_atomically(out_dir, pipe.save_pretrained, "model_index.json")


def build_tiny_clipseg(out_dir: Path, *, seed: int = 0) -> Path:
    """A CLIPSegForImageSegmentation with its processor (the tiny CLIP tokenizer, a 64 px image processor)."""
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPSegTextConfig,
        CLIPSegVisionConfig,
        ViTImageProcessor,
    )

    log.info("building the tiny CLIPSeg model in %s", out_dir)
    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    config = CLIPSegConfig(
        text_config=CLIPSegTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ).to_dict(),
        vision_config=CLIPSegVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=3,
            image_size=64,
            patch_size=16,
        ).to_dict(),
        projection_dim=16,
        reduce_dim=16,
        extract_layers=[0, 1, 2],
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    model = CLIPSegForImageSegmentation(config)
    processor = CLIPSegProcessor(
        image_processor=ViTImageProcessor(size={"height": 64, "width": 64}, do_resize=True), tokenizer=tokenizer
    )

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return save_atomically(out_dir, write)


def build_tiny_blip(out_dir: Path, *, seed: int = 0) -> Path:
    """A BlipForConditionalGeneration captioner with its processor (the tiny CLIP tokenizer stands in for
    BLIP's BERT tokenizer: the model only needs ids, a start and an end token)."""
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        BlipTextConfig,
        BlipVisionConfig,
    )

    log.info("building the tiny BLIP captioner in %s", out_dir)
    tokenizer = _tiny_bert_tokenizer(BertTokenizerFast)
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config=BlipTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            encoder_hidden_size=32,
            max_position_embeddings=64,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.sep_token_id,
            sep_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ).to_dict(),
        vision_config=BlipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=64,
            patch_size=16,
        ).to_dict(),
        projection_dim=32,
    )
    model = BlipForConditionalGeneration(config)
    model.generation_config.max_new_tokens = 20
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 64, "width": 64}), tokenizer=tokenizer)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return save_atomically(out_dir, write)


def _tiny_bert_tokenizer(tokenizer_class: Any, size: int | None = None) -> Any:
    """A WordPiece tokenizer over the tiny corpus, in the format of BLIP's (BERT's) tokenizer; padded
    with unused entries to ``size`` ids so that a real-sized model's every output id decodes."""
    from engine.tiny import _CORPUS

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = special + sorted(set(_CORPUS))
    if size is not None:
        words += [f"[unused{i}]" for i in range(size - len(words))]
    tokenizer = tokenizer_class(vocab={word: i for i, word in enumerate(words)}, do_lower_case=True)
    # BLIP's captioner starts decoding from a [DEC] token (its bos).
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def build_random_edit_models(out_dir: Path, *, seed: int = 0) -> dict[str, str]:
    """The real architectures behind edits (InstructPix2Pix), repairs (an SD 1.5 inpainting UNet with 9
    channels, CLIPSeg rd64) and descriptions (BLIP base) with random weights, saved for the same
    ``from_pretrained`` code: what a GPU benchmark measures, since speed depends on shapes only.
    Tokenizers are the tiny ones, their ids a subset of the real vocabularies."""
    import json

    import diffusers
    import torch
    import transformers
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTextConfig,
        ViTImageProcessor,
    )

    from engine.pipelines.registry import CONFIGS_DIR

    spec = json.loads((CONFIGS_DIR / "instruct-pix2pix.json").read_text())
    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    paths: dict[str, str] = {}
    for name, channels, pipeline_name in (
        ("edit", 8, "StableDiffusionInstructPix2PixPipeline"),
        ("inpaint", 9, "StableDiffusionInpaintPipeline"),
    ):
        unet_config = {**spec["unet"], "in_channels": channels}
        unet = getattr(diffusers, unet_config.pop("_class_name")).from_config(unet_config)
        vae_config = dict(spec["vae"])
        vae = getattr(diffusers, vae_config.pop("_class_name")).from_config(vae_config)
        text_config = dict(spec["text_encoder"])
        text_encoder = getattr(transformers, text_config.pop("architectures")[0])(CLIPTextConfig(**text_config))
        scheduler_config = dict(spec["scheduler"])
        scheduler = getattr(diffusers, scheduler_config.pop("_class_name")).from_config(scheduler_config)
        pipe = getattr(diffusers, pipeline_name)(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        paths[name] = str(save_atomically(out_dir / name, pipe.save_pretrained, "model_index.json"))
        del pipe, unet, vae, text_encoder

    clipseg = CLIPSegForImageSegmentation(CLIPSegConfig())  # the defaults are clipseg-rd64's shapes
    clipseg_processor = CLIPSegProcessor(
        image_processor=ViTImageProcessor(size={"height": 352, "width": 352}), tokenizer=tokenizer
    )

    def write_clipseg(tmp: Path) -> None:
        clipseg.save_pretrained(tmp)
        clipseg_processor.save_pretrained(tmp)

    paths["mask"] = str(save_atomically(out_dir / "mask", write_clipseg))

    blip_tokenizer = _tiny_bert_tokenizer(BertTokenizerFast, size=30522)
    blip_config = BlipConfig()  # the defaults are blip-image-captioning-base's shapes
    blip_config.text_config.bos_token_id = blip_tokenizer.bos_token_id
    blip = BlipForConditionalGeneration(blip_config)
    blip_processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 384, "width": 384}), tokenizer=blip_tokenizer
    )

    def write_blip(tmp: Path) -> None:
        blip.save_pretrained(tmp)
        blip_processor.save_pretrained(tmp)

    paths["caption"] = str(save_atomically(out_dir / "caption", write_blip))
    log.info("built the edit models with random weights in %s", out_dir)
    return paths
