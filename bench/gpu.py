"""LEDiff ITM speed and memory on full-size random-init models, printed as one JSON object.

The models have the official shapes (SD-1.5-sized UNets with 8 input channels for the highlight
and shadow denoisers, the SD VAE, a CLIP ViT-L text encoder) with random weights, in fp16 on
CUDA (VAE and fusion in fp32, as the pipeline runs them). For each size it runs one LDR -> HDR
conversion with *both* denoisers (two denoising loops, no guidance: the ITM default) and
reports seconds per denoising step, total seconds and peak VRAM. Sizes: 512x512, 1024x1024 and
a 2048x1024 panorama (windowed, wrapping). Target on one modern GPU: 1024x1024 <= 15 s, <= 8 GB.

Without a CUDA GPU it says so in the JSON and exits 0. ``--tiny --device cpu`` runs the same
code on tiny models (the test suite does, to keep this script working).

    python bench/gpu.py [--steps 50] [--sizes 512x512,1024x1024,2048x1024] [--out result.json]

MVDiffusion views and prompt -> 4096x2048 HDR panoramas: ``bench/panorama_gpu.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _common (bench/ is not a package)
from _common import emit  # noqa: E402

TARGET = {"size": "1024x1024", "seconds": 15.0, "vram_gb": 8.0}


def build_pipeline(tiny: bool, device, dtype):
    """A LEDiffPipeline with highlight and shadow UNets of random weights, on ``device``."""
    import torch
    from transformers import CLIPTokenizer

    from lediff_backend.models.fusion import LatentFusion
    from lediff_backend.pipelines.lediff import LEDiffPipeline
    from lediff_backend.testing.tiny import SD15, TINY, build_components, write_tokenizer

    shapes = TINY if tiny else SD15
    with tempfile.TemporaryDirectory() as folder:
        vocab_size = write_tokenizer(Path(folder))
        tokenizer = CLIPTokenizer.from_pretrained(folder)
    with torch.device(device):  # initialise on the GPU: minutes faster than on the CPU
        highlight = build_components(shapes, 8, seed=0, vocab_size=vocab_size if tiny else 49408)
        shadow = build_components(shapes, 8, seed=10)["unet"]
        fusion = LatentFusion()
    pipe = LEDiffPipeline(
        vae=highlight["vae"].float(),
        text_encoder=highlight["text_encoder"].to(dtype),
        tokenizer=tokenizer,
        scheduler=highlight["scheduler"],
        fusion=fusion,
        highlight_unet=highlight["unet"].to(dtype),
        shadow_unet=shadow.to(dtype),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def measure(pipe, height: int, width: int, steps: int, device) -> dict:
    """One ITM run; seconds per step from the step callback, peak VRAM from the CUDA allocator."""
    import numpy as np
    import torch

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    image = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
    image[: height // 4] = 1.0  # a clipped sky, as ITM inputs have
    stamps: list[float] = []

    def on_step(p, step, t, tensors):
        sync()
        stamps.append(time.perf_counter())
        return {}

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    out = pipe(
        image=image,
        num_inference_steps=steps,
        generator=torch.Generator("cpu").manual_seed(0),
        panorama=width == 2 * height,
        callback_on_step_end=on_step,
    )
    sync()
    total = time.perf_counter() - start
    intervals = np.diff(stamps)
    return {
        "size": f"{width}x{height}",
        "panorama": width == 2 * height,
        "denoising_steps": len(stamps),
        "seconds_per_step": round(statistics.median(intervals), 4) if len(intervals) else None,
        "total_seconds": round(total, 3),
        "peak_vram_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "finite": bool(np.isfinite(out.images).all()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="denoising steps per loop (default: 50)")
    parser.add_argument("--sizes", default="512x512,1024x1024,2048x1024", help="WIDTHxHEIGHT list")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny models (a quick check, not a benchmark)")
    parser.add_argument("--out", help="also write the JSON to this file")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device)
    report: dict = {"benchmark": "lediff-itm", "models": "tiny" if args.tiny else "sd15-shaped random init"}
    if device.type == "cuda" and not torch.cuda.is_available():
        report.update(gpu=False, message="no CUDA GPU present: nothing was measured")
    else:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        report.update(
            gpu=device.type == "cuda",
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            dtype=str(dtype).removeprefix("torch."),
            steps_per_loop=args.steps,
            loops=2,
            denoisers="highlight+shadow",
        )
        pipe = build_pipeline(args.tiny, device, dtype)
        measure(pipe, 512 if not args.tiny else 64, 512 if not args.tiny else 64, 2, device)  # warm-up
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        report["runs"] = [measure(pipe, h, w, args.steps, device) for w, h in sizes]
        target = next((r for r in report["runs"] if r["size"] == TARGET["size"]), None)
        if target is not None and report["gpu"]:
            report["target"] = dict(
                TARGET, met=target["total_seconds"] <= TARGET["seconds"] and target["peak_vram_gb"] <= TARGET["vram_gb"]
            )
    emit(report, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
