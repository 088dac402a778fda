"""Neural bracket merges (GMODiff, LF-Diff): seconds per merge and peak VRAM, printed as one JSON object.

Both engines run as ``lediff merge`` and the server run them (``merge_bracket`` with a warm
pipeline), on full-size models with random weights:

- GMODiff: the official shapes on Stable Diffusion 2.1 base: the SD-2 UNet with GMODiff's
  8-channel input, the SD VAE with its guided skips, a second VAE for the condition, DaReg and
  the prior module at the official sizes. The LoRA adapters are merged into these layers when
  the official files load, so they change no shape and cost no time. UNet and VAEs in fp16 on
  CUDA, DaReg and the prior module in fp32, as ``load_pipeline`` runs them; one denoising step.
- LF-Diff: the paper's sizes (``LFDiffConfig()``), fp32 as the pipeline always runs, with its
  DDIM steps of the prior and DHRNet in the pipeline's tiles.

Each merge is a bracket of three exposures (-2, 0, +2 EV) of one random scene. Per engine and
size: one warm-up merge, then the best wall time of ``--repeat`` (the HDR comes back to the
host, so the GPU has finished), and the peak VRAM over them. Sizes: 1500x1000, where the
LF-Diff paper reports 0.72 s (``vs_paper``: ours over that, on a GPU), and a 2048x1024
panorama. GMODiff's paper claims about 100x the speed of earlier latent-diffusion HDR methods
and gives no seconds to compare with: its seconds only.

Without a CUDA GPU it says so in the JSON and exits 0. ``--tiny --device cpu`` runs the same
code on tiny models (the tests do, to keep this script working).

    python bench/merge_gpu.py [--repeat 3] [--sizes 1500x1000,2048x1024] [--out result.json]
"""

from __future__ import annotations

import functools
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _common (bench/ is not a package)
from _common import best_of, emit, parser  # noqa: E402

EVS = (-2.0, 0.0, 2.0)
LFDIFF_PAPER = {"size": "1500x1000", "seconds": 0.72}


def build_gmodiff(tiny: bool, device):
    """A GMODiffPipeline of random weights in the official (or tiny) shapes, on ``device``."""
    import copy

    import torch
    from diffusers import DDPMScheduler

    from lediff_backend.models.gmodiff import DaReg, DaRegConfig, MaskVisualFusion, attach_guided_skips, widen_conv_in
    from lediff_backend.pipelines.gmodiff import GMODiffPipeline
    from lediff_backend.pipelines.lediff_engine import default_dtype
    from lediff_backend.testing.tiny import SD2, TINY_SD2, build_components
    from lediff_backend.testing.tiny_gmodiff import TINY_DAREG

    dareg_config = TINY_DAREG if tiny else DaRegConfig()
    with torch.device(device):  # initialise on the GPU: minutes faster than on the CPU
        parts = build_components(TINY_SD2 if tiny else SD2, 4, seed=0)
        unet, vae = parts["unet"], parts["vae"]
        condition_vae = copy.deepcopy(vae)  # SD's VAE too; only its encoder runs
        widen_conv_in(unet)
        attach_guided_skips(vae, unet.config.cross_attention_dim)
        dareg = DaReg(dareg_config)
        prior_dim = unet.config.cross_attention_dim
        proj = MaskVisualFusion(dareg_config.channels[-1], (8, 16), 16, prior_dim) if tiny else MaskVisualFusion()
    dtype = default_dtype(device)
    # SD 2.1 base's scheduler: its betas, epsilon prediction, clip_sample off
    scheduler = DDPMScheduler.from_config(dict(parts["scheduler"].config, clip_sample=False))
    diffusion = (m.to(dtype).eval() for m in (vae, condition_vae, unet))
    pipe = GMODiffPipeline(dareg.eval(), proj.eval(), *diffusion, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def build_lfdiff(tiny: bool, device):
    """An LFDiffPipeline of random weights at the paper's (or tiny) sizes, on ``device``."""
    import torch

    from lediff_backend.models.lfdiff_config import LFDiffConfig
    from lediff_backend.pipelines.lfdiff import LFDiffPipeline
    from lediff_backend.testing.tiny_lfdiff import TINY_LFDIFF

    torch.manual_seed(0)
    return LFDiffPipeline.from_config(TINY_LFDIFF if tiny else LFDiffConfig()).to(device)


def bracket(width: int, height: int) -> list:
    """Three display-encoded exposures (H, W, 3) at ``EVS`` of one random scene, some of it clipped."""
    import numpy as np

    scene = 4 * np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
    return [np.clip(scene * 2.0**ev, 0, 1) ** (1 / 2.2) for ev in EVS]


def measure(merge, pipe, width: int, height: int, repeat: int, device) -> dict:
    """One warm-up merge, then the best of ``repeat``: seconds and peak VRAM."""
    import numpy as np
    import torch

    run = functools.partial(merge, bracket(width, height), list(EVS), reference=1, model_dir=None, pipeline=pipe)
    run()  # cuDNN's algorithm choices and the allocator's pools for this size
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timing, hdr = best_of(run, repeat)
    return {
        "size": f"{width}x{height}",
        "panorama": width == 2 * height,
        "seconds": round(timing.wall_s, 3),
        "peak_vram_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "finite": bool(np.isfinite(hdr).all()),
    }


def vs_paper(runs: list[dict]) -> float | None:
    """LF-Diff's seconds at the paper's size over the paper's 0.72 s, or None if not measured."""
    run = next((r for r in runs if r["size"] == LFDIFF_PAPER["size"]), None)
    return None if run is None else round(run["seconds"] / LFDIFF_PAPER["seconds"], 2)


def bench_engine(name: str, tiny: bool, device, sizes: list[tuple[int, int]], repeat: int) -> dict:
    """Build one engine, time it at every size, and free it (the next engine's peak is its own)."""
    import importlib

    import torch

    if name == "gmodiff":
        pipe = build_gmodiff(tiny, device)
        networks = ("dareg", "proj", "unet", "vae", "condition_vae")
        about = {"dtype": str(pipe.unet.dtype).removeprefix("torch."), "dareg_dtype": "float32",
                 "denoising_steps": 1, "paper": "about 100x faster than earlier latent-diffusion HDR; no seconds"}
    else:
        pipe = build_lfdiff(tiny, device)
        networks = ("condition", "denoiser", "dhrnet")
        about = {"dtype": "float32", "denoising_steps": pipe.config.sampling_steps, "dhrnet_tile": pipe.tile_size,
                 "paper": dict(LFDIFF_PAPER)}
    merge = importlib.import_module(f"lediff_backend.pipelines.{name}").merge_bracket
    parameters = sum(p.numel() for n in networks for p in getattr(pipe, n).parameters())
    result = {
        **about,
        "parameters_millions": round(parameters / 1e6, 2),
        "runs": [measure(merge, pipe, w, h, repeat, device) for w, h in sizes],
    }
    del pipe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__.splitlines()[0], repeat=3)
    cli.add_argument("--sizes", default="1500x1000,2048x1024", help="WIDTHxHEIGHT list (default: %(default)s)")
    cli.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    cli.add_argument("--tiny", action="store_true", help="tiny models (a quick check, not a benchmark)")
    args = cli.parse_args(argv)

    import torch

    device = torch.device(args.device)
    report: dict = {
        "benchmark": "neural-merge",
        "models": "tiny" if args.tiny else "official-shape random init (GMODiff on SD 2.1 base, LF-Diff paper sizes)",
    }
    if device.type == "cuda" and not torch.cuda.is_available():
        report.update(gpu=False, message="no CUDA GPU present: nothing was measured")
    else:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        report.update(
            gpu=device.type == "cuda",
            device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            bracket_evs=list(EVS),
            timing=f"one warm-up merge, then the best wall time of {args.repeat}",
            engines={name: bench_engine(name, args.tiny, device, sizes, args.repeat) for name in ("gmodiff", "lfdiff")},
        )
        lfdiff = report["engines"]["lfdiff"]
        if report["gpu"] and not args.tiny and (ratio := vs_paper(lfdiff["runs"])) is not None:
            lfdiff["vs_paper"] = ratio
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
