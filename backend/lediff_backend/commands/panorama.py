"""``lediff panorama "prompt" -o OUT.exr``: prompt (or photo) -> 2:1 HDR environment.

MVDiffusion generates 8 consistent views (a photo becomes view 0 of its outpainting variant),
they are stitched, zenith and nadir are completed, and LEDiff expands the panorama to HDR,
seamless at the wrap. ``--model-dir`` is the models root (``mvdiffusion``,
``mvdiffusion-outpaint``, ``lediff-highlight``, ``lediff-shadow`` inside it, as ``lediff
tiny-models DIR`` writes them) or LEDiff's own folder with ``--mvdiffusion-dir`` beside it.
"""

from __future__ import annotations

import argparse

from ..cli import SUCCESS
from ._console import StderrProgress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what to generate (may be empty with --image)")
    parser.add_argument("-o", "--output", required=True, help="output image (.exr, .hdr or .png)")
    parser.add_argument("--image", help="a photo to outpaint into the panorama (it looks along the centre)")
    parser.add_argument("--fov", type=float, help="the photo's horizontal field of view, degrees (default: EXIF or 90)")
    parser.add_argument("--width", type=int, default=2048, help="panorama width, a multiple of 16 (default: 2048)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps per stage (default: 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--guidance", type=float, default=9.0, help="MVDiffusion's guidance (default: 9, official)")
    parser.add_argument(
        "--poles",
        choices=("auto", "generated", "classic"),
        default="auto",
        help="zenith/nadir: generated with the inpainting weights, or the classic fill (default: auto)",
    )
    parser.add_argument("--model-dir", help="models root (default: $LEDIFF_MODELS or ~/lediff-models)")
    parser.add_argument("--mvdiffusion-dir", help="the converted MVDiffusion folder (default: in the models root)")
    parser.add_argument("--shadow-model-dir", help="the LEDiff shadow model's folder")
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default: auto)")
    parser.add_argument("--half", action="store_true", help="write half-float EXR")


def run(args: argparse.Namespace) -> int:
    from ..convert import write_result
    from ..hdr.imageio import check_image_output
    from ..hdr.summary import summarize
    from ..pipelines.hdr_panorama import lediff_panorama, load_panorama_pipeline

    output = check_image_output(args.output)

    pipes = load_panorama_pipeline(
        args.model_dir, args.device, mvdiffusion_dir=args.mvdiffusion_dir, shadow_model_dir=args.shadow_model_dir
    )
    hdr = lediff_panorama(
        args.prompt,
        image=args.image,
        width=args.width,
        steps=args.steps,
        seed=args.seed,
        guidance=args.guidance,
        progress=StderrProgress("panorama"),
        pipeline=pipes,
        fov_deg=args.fov,
        poles=args.poles,
    )
    meta = summarize(hdr, panorama=True)
    meta.update(engine="mvdiffusion+lediff", prompt=args.prompt, seed=args.seed)
    write_result(output, hdr, meta, half=args.half)
    print(output)
    return SUCCESS
