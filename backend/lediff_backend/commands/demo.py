"""``lediff demo``: a real 8-bit 360° photo -> HDR EXR -> lookdev renders in headless Blender.

Progress goes to stderr; the paths of the files written go to stdout, one per line.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..sample_data import STUDIOLIGHT_NAMES


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, got {text!r}") from None
    if width < 8 or height < 8:
        raise argparse.ArgumentTypeError(f"renders need at least 8x8 pixels, got {text!r}")
    return width, height


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .. import demo

    parser.add_argument("--out", default="outputs/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--hdri", default=demo.DEFAULT_HDRI, choices=STUDIOLIGHT_NAMES,
                        help="which of Blender's CC0 HDRIs is the scene (default: %(default)s)")
    parser.add_argument("--size", type=_size, default=demo.DEFAULT_RENDER_SIZE, metavar="WxH",
                        help="lookdev render size (default: %dx%d)" % demo.DEFAULT_RENDER_SIZE)
    parser.add_argument("--samples", type=_positive, default=demo.DEFAULT_SAMPLES,
                        help="Cycles samples per pixel (default: %(default)s)")
    parser.add_argument("--width", type=_positive, default=demo.DEFAULT_WIDTH,
                        help="panorama width of the photo and the HDR (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from .. import demo

    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f}s] {message}", file=sys.stderr, flush=True)

    outputs = demo.run_demo(
        args.out, hdri=args.hdri, width=args.width, render_size=args.size, samples=args.samples, progress=progress
    )
    progress("done")
    for path in outputs.paths():
        print(path)
    return 0
