"""``lediff bench [fidelity|speed|gpu] --out DIR``: run the repository's benchmarks.

The benchmarks are scripts in the ``bench/`` folder of a source checkout (beside ``backend/``),
so this command works from a clone (``pip install -e backend``). Each runs in a subprocess of
this interpreter, printing its JSON on stdout and writing its reports into ``DIR``: fidelity
``fidelity.json``, ``fidelity.md`` and its pictures; speed ``speed.json`` and ``speed.md``; gpu
``gpu.json``. Without a name all three run, one after another. ``--args`` passes options on to
the script, e.g. ``lediff bench fidelity --args="--maps city sunset --exposures 0"``.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import lediff_backend

from ..errors import BadInput

# name -> how the script takes DIR: a folder for its reports, or one JSON file in it
BENCHMARKS = {"fidelity": None, "speed": None, "gpu": "gpu.json"}


def find_bench_dir() -> Path:
    """The checkout's ``bench/`` folder, found relative to this package like the demo finds the add-on."""
    folder = Path(lediff_backend.__file__).resolve().parents[2] / "bench"
    if not all((folder / f"{name}.py").is_file() for name in BENCHMARKS):
        raise BadInput(
            f"the benchmarks live in the repository's bench/ folder, and {folder} does not hold them: "
            "run this from a clone of the repository (pip install -e backend)"
        )
    return folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", choices=tuple(BENCHMARKS), help="which benchmark (default: all)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"), help="report folder (default: %(default)s)")
    parser.add_argument("--args", default="", metavar='"OPTIONS"',
                        help='options for the benchmark script, one quoted string (see python bench/NAME.py --help)')


def run(args: argparse.Namespace) -> int:
    folder = find_bench_dir()
    if args.args and args.name is None:
        raise BadInput("--args goes to one benchmark: name it (fidelity, speed or gpu)")
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    status = 0
    for name in [args.name] if args.name else BENCHMARKS:
        target = out / BENCHMARKS[name] if BENCHMARKS[name] else out
        command = [sys.executable, str(folder / f"{name}.py"), "--out", str(target), *shlex.split(args.args)]
        print(f"lediff bench: {name} -> {target}", file=sys.stderr, flush=True)
        code = subprocess.run(command, stdin=subprocess.DEVNULL).returncode
        status = status or code
    return status
