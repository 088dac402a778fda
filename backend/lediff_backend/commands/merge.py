"""``lediff merge IMG... -o OUT.exr``: an exposure bracket becomes one HDR image, ghosts removed.

``--engine classic`` (the default through ``auto``) needs no weights; ``gmodiff`` and ``lfdiff``
are the neural engines (``merge.NEURAL_ENGINES``), which take ``--model-dir``, ``--device`` and
``--seed`` and merge the darkest, reference and brightest exposures.
"""

from __future__ import annotations

import argparse
import json

from ._console import StderrProgress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..merge import MERGE_ENGINES, RESPONSES

    parser.add_argument("inputs", nargs="+", metavar="IMG",
                        help="the bracket: 2 or more PNG, JPEG, 16-bit TIFF or (with rawpy) RAW files of one size")
    parser.add_argument("-o", "--output", required=True, help="the HDR file to write (.exr, or .hdr)")
    parser.add_argument("--ev", nargs="+", type=float, metavar="EV",
                        help="each image's exposure in stops, in the images' order, after them: "
                             "--ev -2 0 2 (default: from EXIF time, aperture and ISO)")
    parser.add_argument("--engine", default="auto", choices=("auto", *MERGE_ENGINES),
                        help="auto (default: classic), classic (no weights), or a neural engine")
    parser.add_argument("--reference", type=int, metavar="K",
                        help="index of the image (from 0) that moving things are taken from "
                             "(default: the middle exposure)")
    parser.add_argument("--response", choices=RESPONSES,
                        help="camera response: srgb (default; linear for RAW files), recover "
                             "(estimated from the bracket) or linear")
    parser.add_argument("--model-dir", help="neural engines: models root or the model's own folder"
                                            " (default: $LEDIFF_MODELS or ~/lediff-models)")
    parser.add_argument("--device", default="auto", help="neural engines: auto (default), cuda, mps or cpu")
    parser.add_argument("--seed", type=int, default=0, help="neural engines: random seed (default 0)")
    parser.add_argument("--half", action="store_true", help="16-bit half-float EXR (values clamped to 65504)")
    parser.add_argument("--gainmap", metavar="OUT.jpg", help="also write an Ultra HDR gain-map JPEG of the result")


def run(args: argparse.Namespace) -> int:
    from ..merge import merge_files
    from ._gainmap import check_gainmap_output, write_gainmap_of

    check_gainmap_output(args.gainmap)
    meta = merge_files(
        args.inputs, args.output, evs=args.ev, engine=args.engine, reference=args.reference,
        response=args.response, half=args.half, model_dir=args.model_dir, device=args.device, seed=args.seed,
        progress=StderrProgress("merge"),
    )
    write_gainmap_of(meta, args.gainmap)
    print(json.dumps(meta, indent=2))
    return 0
