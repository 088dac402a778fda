"""``lediff merge IMG... -o OUT.exr``: an exposure bracket becomes one HDR image, ghosts removed."""

from __future__ import annotations

import argparse
import json

from ._console import StderrProgress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..merge import RESPONSES

    parser.add_argument("inputs", nargs="+", metavar="IMG",
                        help="the bracket: 2 or more PNG, JPEG, 16-bit TIFF or (with rawpy) RAW files of one size")
    parser.add_argument("-o", "--output", required=True, help="the HDR file to write (.exr, or .hdr)")
    parser.add_argument("--ev", nargs="+", type=float, metavar="EV",
                        help="each image's exposure in stops, in the images' order, after them: "
                             "--ev -2 0 2 (default: from EXIF time, aperture and ISO)")
    parser.add_argument("--engine", default="auto", help="auto (default) or classic")
    parser.add_argument("--reference", type=int, metavar="K",
                        help="index of the image (from 0) that moving things are taken from "
                             "(default: the middle exposure)")
    parser.add_argument("--response", choices=RESPONSES,
                        help="camera response: srgb (default; linear for RAW files), recover "
                             "(estimated from the bracket) or linear")
    parser.add_argument("--half", action="store_true", help="16-bit half-float EXR (values clamped to 65504)")
    parser.add_argument("--gainmap", metavar="OUT.jpg", help="also write an Ultra HDR gain-map JPEG of the result")


def run(args: argparse.Namespace) -> int:
    from ..merge import merge_files
    from ._gainmap import check_gainmap_output, write_gainmap_of

    check_gainmap_output(args.gainmap)
    meta = merge_files(
        args.inputs, args.output, evs=args.ev, engine=args.engine, reference=args.reference,
        response=args.response, half=args.half, progress=StderrProgress("merge"),
    )
    write_gainmap_of(meta, args.gainmap)
    print(json.dumps(meta, indent=2))
    return 0
