"""``lediff tiny-models DIR``: write a models root of tiny random-init models (official layouts).

For tests, benchmarks and trying the whole path without downloads: ``lediff-highlight``,
``lediff-shadow`` and ``sd-base`` load exactly like the official checkpoints, but produce noise.
"""

from __future__ import annotations

import argparse

from ..cli import SUCCESS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="models root to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: 0)")


def run(args: argparse.Namespace) -> int:
    from ..testing.tiny import write_tiny_models

    for name, folder in write_tiny_models(args.dir, seed=args.seed).items():
        print(f"{name}: {folder}")
    return SUCCESS
