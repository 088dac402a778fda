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
    parser.add_argument("--sun-ev", type=float, help="the sun's radiance in stops over the photo's white")


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_file

    meta = convert_file(
        args.input, args.output, engine=args.engine, width=args.width, half=args.half,
        sun_ev=args.sun_ev, progress=StderrProgress("convert"),
    )
    print(json.dumps(meta, indent=2))
    return 0
