"""`atelier bench taesd`: TAESD against the full VAE on the same latents, and what live previews cost.

One run, one pipeline: latents are made once, then decoded by both decoders in alternating rounds
(ms per image, PSNR between the two decodes); then the same jobs are generated with and without
previews (a preview wanted at every due step), which gives the previews' overhead per image. Peak
memory (GPU and RSS) is reported next to each figure. With random weights the PSNR says nothing about
quality (two random decoders disagree); with the real weights it is what an admin weighs against the
time saved before turning on ATELIER_FAST_DECODE.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from engine.compute import call_compute
from engine.contract import JobSpec
from engine.timing import peak_memory, reset_peak_memory


def add_bench_taesd_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.bench import _add_once
    from engine.pipelines.registry import ARCHITECTURES

    _add_once(
        parser, "--tiny", action="store_true", help="the offline tiny model and TAESD (the default without --arch)"
    )
    _add_once(parser, "--data-dir", help="where models are kept (overrides ATELIER_DATA_DIR)")
    parser.add_argument("--arch", choices=ARCHITECTURES, help="a real architecture (hub ids, or --random-weights)")
    parser.add_argument(
        "--random-weights", action="store_true", help="--arch and TAESD from their shipped configs, random weights"
    )
    parser.add_argument("--taesd", help="hub id or directory of the TAESD (default: the one for the model)")
    parser.add_argument("--size", type=int, help="image side (default: the model's usual; 64 for --tiny)")
    parser.add_argument("--images", type=int, default=8, help="latents decoded per round (default 8)")
    parser.add_argument("--batch", type=int, default=1, help="images per decode call (default 1)")
    parser.add_argument("--preview-steps", type=int, default=4, help="steps of the preview-overhead runs")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    _add_once(parser, "--json", action="store_true", help="print one JSON object")


def run_bench_taesd(args: argparse.Namespace) -> int:
    from engine.config import TINY_MODEL, EngineSettings
    from engine.pipelines.registry import CONFIGS_DIR, architecture, build_random_pipeline, pick_device, resolve_model
    from engine.pipelines.text_to_image import PipelineOptions, TextToImage
    from engine.serve import quiet_model_libraries

    quiet_model_libraries()
    if args.arch and args.tiny:
        print("error: --tiny and --arch are exclusive", file=sys.stderr)
        return 2
    if args.random_weights and not args.arch:
        print("error: --random-weights needs --arch", file=sys.stderr)
        return 2
    settings = EngineSettings(**({"data_dir": Path(args.data_dir)} if args.data_dir else {}))
    device, dtype = pick_device(args.device, args.dtype)
    if args.arch:
        spec = architecture(args.arch)
        model, side = spec["hub_id"], args.size or spec["default_side"]
        source: Any = (
            call_compute(build_random_pipeline, args.arch, device=device, dtype=dtype) if args.random_weights else model
        )
    else:
        settings.ensure_dirs()
        model, side = TINY_MODEL, args.size or 64
        source = resolve_model(TINY_MODEL, settings.models_dir)
    pipeline = call_compute(
        TextToImage,
        model,
        source,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        options=PipelineOptions(warmup_side=side),
    )
    taesd = call_compute(_taesd, args, pipeline, settings, CONFIGS_DIR / "taesd.json")
    report = call_compute(bench_taesd, pipeline, taesd, args, side)
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


def _taesd(args: argparse.Namespace, pipeline: Any, settings: Any, config_path: Path) -> Any:
    import diffusers
    import torch

    from engine.pipelines.previews import load_taesd, resolve_taesd

    if args.random_weights and not args.taesd:
        config = json.loads(config_path.read_text())
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        torch.manual_seed(0)
        with torch.device(pipeline.device):
            taesd = diffusers.AutoencoderTiny.from_config(config)
        return taesd.to(dtype=pipeline.dtype).eval()
    source = resolve_taesd(args.taesd, pipeline.pipe, settings.models_dir, tiny=not args.arch)
    return load_taesd(source, device=pipeline.device, dtype=pipeline.dtype)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _to_uint8(sample: Any) -> Any:
    import torch

    return ((sample.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def bench_taesd(pipeline: Any, taesd: Any, args: argparse.Namespace, side: int) -> dict[str, Any]:
    import torch

    from engine.pipelines.previews import LatentPreviewer, PreviewOptions, psnr

    pipe = pipeline.pipe
    vae = pipe.vae
    images, batch = max(1, args.images), max(1, args.batch)
    prompts = [f"a lighthouse on a cliff, study {i}" for i in range(images)]
    with torch.inference_mode():
        latents = pipe(
            prompt=prompts,
            width=side,
            height=side,
            num_inference_steps=1,
            guidance_scale=0.0,
            generator=[torch.Generator("cpu").manual_seed(i) for i in range(images)],
            output_type="latent",
        ).images

    def full(chunk: Any) -> Any:
        return vae.decode(chunk.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]

    def tiny(chunk: Any) -> Any:
        return taesd.decode(chunk.to(taesd.dtype) / taesd.config.scaling_factor, return_dict=False)[0]

    def decode_all(decoder: Any) -> tuple[float, Any]:
        _sync(pipeline.device)
        started = time.perf_counter()
        outputs = [decoder(latents[i : i + batch]) for i in range(0, images, batch)]
        _sync(pipeline.device)
        return time.perf_counter() - started, torch.cat(outputs)

    timings: dict[str, list[float]] = {"full": [], "taesd": []}
    peaks: dict[str, dict[str, float | None]] = {}
    with torch.inference_mode():
        decode_all(full), decode_all(tiny)  # warm-up: kernels, allocator
        decoded: dict[str, Any] = {}
        for _ in range(max(1, args.rounds)):
            for name, decoder in (("full", full), ("taesd", tiny)):
                reset_peak_memory()
                seconds, decoded[name] = decode_all(decoder)
                timings[name].append(seconds)
                peaks[name] = peak_memory()
    full_pixels, tiny_pixels = _to_uint8(decoded["full"]), _to_uint8(decoded["taesd"])
    psnrs = [psnr(a, b) for a, b in zip(full_pixels, tiny_pixels, strict=True)]
    full_ms = statistics.median(timings["full"]) / images * 1000
    tiny_ms = statistics.median(timings["taesd"]) / images * 1000

    # Previews while generating: the same jobs with and without, alternating rounds.
    pipeline.previewer = LatentPreviewer(taesd, PreviewOptions())
    jobs = [
        JobSpec("txt2img", p, p, "", pipeline.model, side, side, args.preview_steps, 0.0, 100 + i)
        for i, p in enumerate(prompts[: min(images, 4)])
    ]
    sink = _EveryPreview()
    plain_s: list[float] = []
    preview_s: list[float] = []
    pipeline.generate(jobs, previews=sink)  # warm-up of the preview path
    for _ in range(max(1, args.rounds)):
        reset_peak_memory()
        plain_s.append(_timed(pipeline, jobs, None))
        peaks["generate"] = peak_memory()
        reset_peak_memory()
        preview_s.append(_timed(pipeline, jobs, sink))
        peaks["generate_with_previews"] = peak_memory()
    plain, previewed = statistics.median(plain_s), statistics.median(preview_s)
    decoded_previews = max(1, pipeline.previewer.decoded)
    return {
        "arch": args.arch or "tiny",
        "random_weights": bool(args.random_weights),
        "device": str(pipeline.device),
        "dtype": str(pipeline.dtype).removeprefix("torch."),
        "size": side,
        "images": images,
        "batch": batch,
        "full_vae_ms_per_image": round(full_ms, 2),
        "taesd_ms_per_image": round(tiny_ms, 2),
        "decode_speedup": round(full_ms / tiny_ms, 2) if tiny_ms else None,
        "psnr_db_mean": round(statistics.fmean(psnrs), 2),
        "psnr_db_min": round(min(psnrs), 2),
        "full_vae_memory": peaks["full"],
        "taesd_memory": peaks["taesd"],
        "preview_steps": args.preview_steps,
        "preview_jobs": len(jobs),
        "generate_images_per_s": round(len(jobs) / plain, 3),
        "generate_with_previews_images_per_s": round(len(jobs) / previewed, 3),
        "preview_overhead_ms_per_image": round((previewed - plain) / len(jobs) * 1000, 2),
        "preview_decode_ms_per_image": round(pipeline.previewer.decode_seconds / decoded_previews * 1000, 2),
        "generate_memory": peaks["generate"],
        "generate_with_previews_memory": peaks["generate_with_previews"],
        "rounds": max(1, args.rounds),
    }


class _EveryPreview:
    """A sink that wants every due preview, as a member's status message would (minus the interval)."""

    def wants_preview(self, step: int, total: int) -> bool:
        return True

    def on_preview(self, step: int, total: int, images: list[bytes]) -> None:
        pass


def _timed(pipeline: Any, jobs: list[JobSpec], sink: Any) -> float:
    _sync(pipeline.device)
    started = time.perf_counter()
    pipeline.generate(jobs, previews=sink)
    _sync(pipeline.device)
    return time.perf_counter() - started
