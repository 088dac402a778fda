"""``lediff info FILE``: size, dynamic range, peak, median and, for panoramas, the sun."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="an HDR (EXR, .hdr) or LDR image")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _describe(summary: dict) -> str:
    lines = [
        f"size     {summary['width']} x {summary['height']}" + ("  (360° panorama)" if summary["panorama"] else ""),
        f"format   {summary['format']}, {summary['bit_depth']}-bit, {'HDR' if summary['is_hdr'] else 'LDR'}",
        f"range    {summary['stops']:.1f} stops",
        f"peak     {summary['peak']:.4g}   median {summary['median']:.4g}",
    ]
    sun = summary.get("sun")
    if sun:
        x, y, z = sun["direction"]
        kind = "sun" if sun["is_sun"] else "brightest light"
        lines.append(
            f"{kind:8s} direction [{x:+.3f}, {y:+.3f}, {z:+.3f}], {sun['angular_diameter']:.2f}° wide, "
            f"{100 * sun['share']:.0f}% of the irradiance facing it"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..classic.expand import linearise
    from ..hdr.imageio import read_image
    from ..hdr.summary import summarize

    image = read_image(args.file)
    pixels = image.pixels if image.is_hdr else linearise(image.pixels)
    summary = {"format": image.format, "bit_depth": image.bit_depth, "is_hdr": image.is_hdr, **summarize(pixels)}
    print(json.dumps(summary, indent=2) if args.json else _describe(summary))
    return 0
