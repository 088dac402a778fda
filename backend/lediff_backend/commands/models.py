"""``lediff models list|download``: the model folders the backend knows, and how to get them.

``list`` shows each model's folder and whether it is complete. ``download NAME`` fetches an
official model on a machine with internet access (Google Drive zips via ``gdown``, unzipped into
the models root; hub models into the Hugging Face cache); offline it says what to place where.
"""

from __future__ import annotations

import argparse

from ..cli import SUCCESS
from ..weights import MODELS, download_model, model_status, models_root
from ._console import StderrProgress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="known models and whether they are installed")
    listing.add_argument("--model-dir", help="models root (default: $LEDIFF_MODELS or ~/lediff-models)")
    download = sub.add_parser("download", help="download and install an official model")
    download.add_argument("name", choices=sorted(MODELS), help="which model")
    download.add_argument("--model-dir", help="models root (default: $LEDIFF_MODELS or ~/lediff-models)")
    download.add_argument("--offline", action="store_true", help="do not go online; print what to place where")


def _list(args: argparse.Namespace) -> int:
    print(f"models root: {models_root(args.model_dir)}")
    for name, spec in MODELS.items():
        folder, status = model_status(name, args.model_dir)
        print(f"{name:18} {status}\n{'':18} {spec.title}; {folder or 'not installed'}; source {spec.url}")
    return SUCCESS


def _download(args: argparse.Namespace) -> int:
    folder = download_model(args.name, args.model_dir, offline=args.offline, progress=StderrProgress(args.name))
    print(f"{args.name}: installed at {folder}")
    return SUCCESS


def run(args: argparse.Namespace) -> int:
    return _list(args) if args.action == "list" else _download(args)
