"""Where a model reference becomes a directory or hub id, and which device and dtype to run on."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from engine.config import TINY_MODEL, ConfigError

log = logging.getLogger(__name__)


def resolve_model(model: str, models_dir: Path) -> str:
    """The path or hub id ``from_pretrained`` takes; the tiny model is built here on first use."""
    if model == TINY_MODEL:
        from engine.tiny import build_tiny_sd

        return str(build_tiny_sd(models_dir / "tiny-sd"))
    return model


def half_precision_variant(source: str) -> str | None:
    """ "fp16" where the model (a directory or a hub repo) ships fp16 weight files beside the full ones."""
    directory = Path(source)
    if directory.is_dir():
        names = [path.name for path in directory.rglob("*.fp16.*")]
    else:
        try:
            from huggingface_hub import list_repo_files

            names = list_repo_files(source)
        except Exception:  # offline, private or unknown: the plain files, and from_pretrained says what is wrong
            log.debug("cannot list the files of %s", source, exc_info=True)
            return None
    return "fp16" if any(".fp16." in name for name in names) else None


def variant_for(source: str, dtype: Any) -> str | None:
    """The fp16 files where a half-precision run can use them: half the download and the disk."""
    import torch

    return half_precision_variant(source) if dtype in (torch.float16, torch.bfloat16) else None


# What each task loads unless configured otherwise, and the offline tiny stand-in for --tiny.
TASK_DEFAULTS = {
    "edit": "timbrooks/instruct-pix2pix",
    "mask": "CIDAS/clipseg-rd64-refined",
    "caption": "Salesforce/blip-image-captioning-base",
}


def resolve_task_model(task: str, configured: str | None, models_dir: Path, *, tiny: bool) -> str | None:
    """The path or hub id for an edit (InstructPix2Pix), mask (CLIPSeg), caption (BLIP) or inpaint
    model; tiny random-weight models of the same classes with --tiny. ``inpaint`` may be None: the
    configured image model's own weights then inpaint."""
    if tiny:
        from engine import tiny_edit

        builders = {
            "edit": (tiny_edit.build_tiny_instruct_pix2pix, "tiny-instruct-pix2pix"),
            "inpaint": (tiny_edit.build_tiny_inpainting, "tiny-inpainting"),
            "mask": (tiny_edit.build_tiny_clipseg, "tiny-clipseg"),
            "caption": (tiny_edit.build_tiny_blip, "tiny-blip"),
        }
        build, name = builders[task]
        return str(build(models_dir / name))
    return configured or TASK_DEFAULTS.get(task)


def pick_device(device: str = "auto", dtype: str = "auto"):  # type: ignore[no-untyped-def]
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"ATELIER_DEVICE is {device}, but this machine has no CUDA device that torch {torch.__version__} can use"
        )
    if dtype == "auto":
        # fp16 VAE decodes of SDXL overflow; bf16 keeps fp32's range at half the memory.
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    return torch.device(device), torch_dtype


ARCHITECTURES = ("sd-turbo", "sdxl-turbo")
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


def architecture(arch: str) -> dict[str, Any]:
    """The shipped architecture description of a real model (UNet, VAE, text encoders, scheduler)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return json.loads((CONFIGS_DIR / f"{arch}.json").read_text())


def build_random_pipeline(arch: str, *, device: Any = "cpu", dtype: Any = None, seed: int = 0) -> Any:
    """A pipeline of the real architecture with random weights: no download, and the same speed as
    the real weights, since the work depends on shapes only.

    Tokenizers: the tiny CLIP BPE tokenizer of engine.tiny. Its ids are a subset of the real 49408-token
    vocabulary, so the text encoders keep their real configs (embedding table included), and every
    prompt is padded to the encoder's 77 positions as with the real tokenizer, so encoding costs the same.
    With ``device="meta"`` nothing is allocated: the modules only describe their shapes.
    """
    import tempfile

    import diffusers
    import torch
    import transformers
    from transformers import CLIPTextConfig, CLIPTokenizer

    from engine.tiny import write_clip_tokenizer

    spec = architecture(arch)
    with tempfile.TemporaryDirectory(prefix="atelier-tokenizer-") as scratch:
        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(Path(scratch)))
    torch.manual_seed(seed)
    components: dict[str, Any] = {}
    # Parameters are created where they will run: initialising billions of them on a GPU takes
    # seconds, on a CPU minutes.
    with torch.device(device):
        for name in ("unet", "vae"):
            config = dict(spec[name])
            components[name] = getattr(diffusers, config.pop("_class_name")).from_config(config)
        for name in ("text_encoder", "text_encoder_2"):
            if name not in spec:
                continue
            config = dict(spec[name])
            model_class = getattr(transformers, config.pop("architectures")[0])
            components[name] = model_class(CLIPTextConfig(**config))
            components[name.replace("text_encoder", "tokenizer")] = tokenizer
    scheduler_config = dict(spec["scheduler"])
    components["scheduler"] = getattr(diffusers, scheduler_config.pop("_class_name")).from_config(scheduler_config)
    pipeline_class = getattr(diffusers, spec["pipeline"])
    extra: dict[str, Any] = dict(spec.get("pipeline_config", {}))
    if spec["pipeline"] == "StableDiffusionPipeline":
        extra.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        extra.update(add_watermarker=False)
    pipe = pipeline_class(**components, **extra)
    if dtype is not None and str(device) != "meta":
        pipe.to(dtype=dtype)
    log.info("built %s with random weights on %s", arch, device)
    return pipe
