"""``lediff preview IN.exr -o OUT.png``: a tone-mapped 8-bit preview of an HDR image."""

from __future__ import annotations

import argparse

TONEMAP_CHOICES = ("reinhard", "exposure", "local")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="HDR image (EXR or .hdr)")
    parser.add_argument("-o", "--output", required=True, help="the PNG to write")
    parser.add_argument("--ev", type=float, help="exposure in stops (default: automatic, median to mid-grey)")
    parser.add_argument("--tonemap", choices=TONEMAP_CHOICES, default="reinhard", help="operator (default reinhard)")
    parser.add_argument("--width", type=int, help="shrink to this width")


def run(args: argparse.Namespace) -> int:
    from ..errors import BadInput
    from ..hdr.atomic import check_writable_output
    from ..hdr.imageio import read_image
    from ..hdr.ldr import write_png
    from ..hdr.tonemap import TONEMAPS, auto_exposure_ev

    output = check_writable_output(args.output)
    if output.suffix.lower() != ".png":
        raise BadInput(f"a preview is a PNG: {output}")
    image = read_image(args.input)
    if not image.is_hdr:
        raise BadInput(f"{args.input} is not HDR; a preview tone-maps an EXR or .hdr file")
    pixels = image.pixels
    if args.width is not None:
        from ..convert import resize_to_width

        pixels = resize_to_width(pixels, args.width)
    ev = auto_exposure_ev(pixels) if args.ev is None else args.ev
    write_png(output, TONEMAPS[args.tonemap](pixels, ev=ev))
    return 0
