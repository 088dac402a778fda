"""MVDiffusion + LEDiff HDR panorama: speed, memory and CAA overhead, printed as one JSON object.

- ``caa_overhead`` (always; tiny models on the CPU): seconds of one joint 8-view UNet call with
  the CAA blocks over the same UNet call on the 8 views independently (blocks idle), best of
  ``--repeat`` interleaved rounds; the ratio is what CAA adds.
- On a CUDA GPU, with full-size random-init models in fp16 (an SD-2-base-shaped UNet with CAA
  blocks, SD-1.5-shaped LEDiff highlight and shadow denoisers, as ``bench/gpu.py``):
  ``views``: seconds per denoising step for 8 views of 512² (guidance on: a batch of 16) and
  ``end_to_end``: prompt -> ``--width`` x ``--width``/2 HDR (views, classic poles, LEDiff on the
  whole panorama), total seconds and peak VRAM. Target on one modern GPU: 4096x2048 within
  60 s and 12 GB.

Without a CUDA GPU it says so in the JSON (only the CPU overhead is measured) and exits 0.
``--tiny --device cpu`` runs the GPU part's code on tiny models (the tests do).

    python bench/panorama_gpu.py [--steps 50] [--width 4096] [--out result.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _common (bench/ is not a package)
from _common import emit  # noqa: E402


def _load_sibling(name: str):
    """A module of bench/ by file (bench/ is not a package, and Blender's bpy has its own ``gpu``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"lediff_bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_lediff = _load_sibling("gpu").build_pipeline

TARGET = {"width": 4096, "seconds": 60.0, "vram_gb": 12.0}


def build_mvdiffusion(tiny: bool, device, dtype):
    """An MVDiffusionPipeline with a random-init SD-2-shaped (or tiny) UNet and CAA blocks."""
    import tempfile

    import torch
    from diffusers import DDIMScheduler
    from transformers import CLIPTokenizer

    from lediff_backend.models.caa import MultiViewCAA
    from lediff_backend.pipelines.mvdiffusion import MVDiffusionPipeline
    from lediff_backend.testing.tiny import SD2, TINY_SD2, build_components, write_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        vocab_size = write_tokenizer(Path(folder))
        tokenizer = CLIPTokenizer.from_pretrained(folder)
    with torch.device(device):
        parts = build_components(TINY_SD2 if tiny else SD2, 4, seed=0, vocab_size=vocab_size if tiny else 49408)
        caa = _random_caa(MultiViewCAA.for_unet(parts["unet"]))
    pipe = MVDiffusionPipeline(
        vae=parts["vae"].float(),
        text_encoder=parts["text_encoder"].to(dtype),
        tokenizer=tokenizer,
        unet=parts["unet"].to(dtype),
        caa=caa.to(dtype),
        scheduler=DDIMScheduler.from_config(dict(parts["scheduler"].config, clip_sample=False)),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _random_caa(caa):
    """Blocks that do something (zero output projections would make them free)."""
    import torch

    with torch.no_grad():
        for name, parameter in caa.named_parameters():
            if "to_out" in name or "ff.net.2" in name:
                parameter.normal_(0.0, 0.02)
    return caa


def caa_overhead(repeat: int) -> dict:
    """Joint 8-view UNet call with CAA over the same call with the blocks idle (tiny, CPU)."""
    import torch

    from _common import best_of_interleaved
    from lediff_backend.models.caa import ViewGeometry

    pipe = build_mvdiffusion(True, torch.device("cpu"), torch.float32)
    size = pipe.default_view_size
    latents = torch.randn(16, 4, size // 8, size // 8)  # 8 views, guidance on
    states = torch.randn(16, 77, pipe.text_encoder.config.hidden_size)
    geometry = ViewGeometry.ring(size)

    def joint():
        with torch.no_grad(), pipe.caa.views(geometry):
            pipe.unet(latents, 500, encoder_hidden_states=states)

    def independent():
        with torch.no_grad():
            pipe.unet(latents, 500, encoder_hidden_states=states)

    joint()  # the geometry is computed once per feature size, then cached
    best = best_of_interleaved({"joint": joint, "independent": independent}, repeat)
    return {
        "models": "tiny",
        "views": 8,
        "joint_seconds": round(best["joint"].wall_s, 5),
        "independent_seconds": round(best["independent"].wall_s, 5),
        "ratio": round(best["joint"].wall_s / best["independent"].wall_s, 3),
    }


def measure(tiny: bool, device, steps: int, width: int) -> dict:
    """Seconds per 8-view step, and prompt -> HDR end to end with peak VRAM."""
    import numpy as np
    import torch

    from lediff_backend.pipelines.hdr_panorama import PanoramaPipelines, lediff_panorama

    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    pipes = PanoramaPipelines(text=build_mvdiffusion(tiny, device, dtype), lediff=build_lediff(tiny, device, dtype))
    stamps: list[float] = []

    def on_step(p, step, t, tensors):
        sync()
        stamps.append(time.perf_counter())
        return {}

    pipes.text("warm-up", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    pipes.text("a beach at sunset", num_inference_steps=steps, callback_on_step_end=on_step)
    intervals = np.diff(stamps)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    hdr = lediff_panorama("a beach at sunset", width=width, steps=steps, pipeline=pipes, poles="classic")
    sync()
    return {
        "views": {
            "views": 8,
            "view_size": pipes.text.default_view_size,
            "guidance": True,
            "seconds_per_step": round(statistics.median(intervals), 4) if len(intervals) else None,
        },
        "end_to_end": {
            "size": f"{width}x{width // 2}",
            "steps_per_stage": steps,
            "total_seconds": round(time.perf_counter() - start, 3),
            "peak_vram_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
            "finite": bool(np.isfinite(hdr).all()),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="denoising steps per stage (default: 50)")
    parser.add_argument("--width", type=int, default=4096, help="panorama width (default: 4096)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of the CPU overhead timing (default: 5)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny models (a quick check, not a benchmark)")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device)
    report: dict = {"benchmark": "mvdiffusion-lediff-panorama", "caa_overhead": caa_overhead(args.repeat)}
    if device.type == "cuda" and not torch.cuda.is_available():
        report.update(gpu=False, message="no CUDA GPU present: only the CPU CAA overhead was measured")
    else:
        report.update(
            gpu=device.type == "cuda",
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            models="tiny" if args.tiny else "sd2-shaped MVDiffusion + sd15-shaped LEDiff, random init",
            **measure(args.tiny, device, args.steps, args.width),
        )
        run = report["end_to_end"]
        if report["gpu"] and args.width == TARGET["width"]:
            met = run["total_seconds"] <= TARGET["seconds"] and run["peak_vram_gb"] <= TARGET["vram_gb"]
            report["target"] = dict(TARGET, met=met)
    emit(report, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
