"""``lediff text2hdr "prompt" -o OUT.exr``: text -> HDR with a base SD model and LEDiff.

The base Stable Diffusion model generates the LDR latent from the prompt; the LEDiff highlight
(and shadow, when present) denoisers expand it into a latent exposure bracket, which is fused
and decoded to HDR. ``--panorama`` makes a 2:1 equirectangular image that wraps seamlessly.
"""

from __future__ import annotations

import argparse

from ..cli import SUCCESS
from ._console import StderrProgress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what to generate")
    parser.add_argument("-o", "--output", required=True, help="output image (.exr, .hdr or .png)")
    parser.add_argument(
        "--model-dir", help="models root or the LEDiff highlight model's folder (default: $LEDIFF_MODELS)"
    )
    parser.add_argument("--shadow-model-dir", help="the LEDiff shadow model's folder")
    parser.add_argument("--base-model", help="base Stable Diffusion folder (default: sd-base in the models root)")
    parser.add_argument("--width", type=int, default=512, help="multiple of 8 (default: 512)")
    parser.add_argument("--height", type=int, default=512, help="multiple of 8 (default: 512)")
    parser.add_argument("--panorama", action="store_true", help="2:1 equirectangular, wrapping in longitude")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps per loop (default: 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--guidance", type=float, default=7.5, help="classifier-free guidance; <= 1 turns it off (default: 7.5)"
    )
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default: auto)")
    parser.add_argument("--half", action="store_true", help="write half-float EXR")


def run(args: argparse.Namespace) -> int:
    from ..convert import write_result
    from ..errors import BadInput
    from ..hdr.imageio import check_image_output
    from ..hdr.summary import summarize
    from ..pipelines.lediff_engine import lediff_text2hdr

    if args.panorama and args.width != 2 * args.height:
        raise BadInput(f"--panorama needs width = 2 x height, got {args.width}x{args.height}")
    output = check_image_output(args.output)

    hdr = lediff_text2hdr(
        args.prompt,
        width=args.width,
        height=args.height,
        model_dir=args.model_dir,
        base_model_dir=args.base_model,
        shadow_model_dir=args.shadow_model_dir,
        steps=args.steps,
        seed=args.seed,
        guidance=args.guidance,
        device=args.device,
        panorama=args.panorama,
        progress=StderrProgress("text2hdr"),
    )
    meta = summarize(hdr, panorama=args.panorama)
    meta.update(engine="lediff", prompt=args.prompt, seed=args.seed)
    write_result(output, hdr, meta, half=args.half)
    print(output)
    return SUCCESS
