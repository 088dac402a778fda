"""``lediff convert IN -o OUT.exr``: an LDR photo or 360° panorama becomes an HDR EXR."""

from __future__ import annotations

import argparse
import json

from ._console import StderrProgress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="LDR image: PNG, JPEG or TIFF (a 2:1 image is treated as a 360° panorama)")
    parser.add_argument("-o", "--output", required=True, help="the HDR file to write (.exr, or .hdr)")
    parser.add_argument("--engine", default="auto", help="auto (default), classic, or a neural engine")
    parser.add_argument("--width", type=int, help="resample to this width first (keeps the aspect ratio)")
    parser.add_argument("--half", action="store_true", help="16-bit half-float EXR (values clamped to 65504)")
    parser.add_argument("--sun-ev", type=float, help="classic: the sun's radiance in stops over the photo's white")
    parser.add_argument("--gainmap", metavar="OUT.jpg", help="also write an Ultra HDR gain-map JPEG of the result")
    neural = parser.add_argument_group("LEDiff engine")
    neural.add_argument("--model-dir", help="models root or the LEDiff highlight model's folder (default: $LEDIFF_MODELS)")
    neural.add_argument("--shadow-model-dir", help="the LEDiff shadow model's folder")
    neural.add_argument("--steps", type=int, default=50, help="denoising steps per loop (default: 50)")
    neural.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    neural.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance; <= 1 turns it off")
    neural.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default: auto)")


NEURAL_OPTIONS = ("model_dir", "shadow_model_dir", "steps", "seed", "guidance", "device")


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_file, resolve_engine
    from ._gainmap import check_gainmap_output, write_gainmap_of

    check_gainmap_output(args.gainmap)
    engine = resolve_engine(args.engine, args.model_dir)
    options = {name: getattr(args, name) for name in NEURAL_OPTIONS} if engine != "classic" else {}
    meta = convert_file(
        args.input, args.output, engine=engine, width=args.width, half=args.half,
        sun_ev=args.sun_ev, progress=StderrProgress("convert"), **options,
    )
    write_gainmap_of(meta, args.gainmap)
    print(json.dumps(meta, indent=2))
    return 0
