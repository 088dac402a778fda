"""The ``lediff`` command line.

Each subcommand lives in its own module under ``commands`` and is imported only when it runs,
so ``lediff --help`` and ``lediff serve`` start without loading numpy-heavy or torch code.
Exit codes: 0 success, 1 internal error, 2 bad input or usage, others from ``errors``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple, Sequence

from . import __version__
from .errors import LediffError

SUCCESS = 0
INTERNAL_ERROR = 1
USAGE_ERROR = 2


class CommandInfo(NamedTuple):
    module: str  # under lediff_backend.commands; defines add_arguments(parser) and run(args) -> int
    summary: str


COMMANDS: dict[str, CommandInfo] = {
    "convert": CommandInfo("convert", "LDR image or 360° photo -> HDR EXR"),
    "merge": CommandInfo("merge", "exposure bracket -> HDR EXR, moving things taken from one exposure"),
    "info": CommandInfo("info", "size, dynamic range, peak and sun of an image"),
    "preview": CommandInfo("preview", "tone-map an HDR image to a PNG"),
    "serve": CommandInfo("serve", "the backend for the Blender add-on: JSON lines on stdin/stdout, or HTTP"),
    "demo": CommandInfo("demo", "real LDR panorama -> HDR EXR -> lookdev render in headless Blender"),
    "text2hdr": CommandInfo("text2hdr", "prompt -> HDR EXR with a base SD model and LEDiff"),
    "models": CommandInfo("models", "list the model folders, or download an official model"),
    "tiny-models": CommandInfo("tiny_models", "write tiny random-init models in the official layouts"),
    "convert-weights": CommandInfo("convert_weights", "convert an official MVDiffusion checkpoint to safetensors"),
    "panorama": CommandInfo("panorama", "prompt or photo -> 2:1 HDR environment (MVDiffusion + LEDiff)"),
    "train": CommandInfo("train", "train LEDiff, LF-Diff or GMODiff models on a folder of HDR images"),
    "bench": CommandInfo("bench", "run the benchmarks in the checkout's bench/ folder: fidelity, speed, gpu"),
}


def _load(name: str):
    return importlib.import_module(f"lediff_backend.commands.{COMMANDS[name].module}")


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    """The top-level parser; only the selected subcommand's module is imported."""
    parser = argparse.ArgumentParser(prog="lediff", description="HDR environment lighting for Blender.")
    parser.add_argument("--version", action="version", version=f"lediff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, info in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=info.summary, description=info.summary)
        if name == selected:
            _load(name).add_arguments(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        return _load(args.command).run(args)
    except LediffError as exc:
        print(f"lediff {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"lediff {args.command}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
