"""``lediff bench [fidelity|speed|gpu] --out DIR``: run the repository's benchmarks.

The benchmarks are scripts in the ``bench/`` folder of a source checkout (beside ``backend/``),
so this command works from a clone (``pip install -e backend``). Each runs in a subprocess of
this interpreter, printing its JSON on stdout and writing its reports into ``DIR``: fidelity
``fidelity.json``, ``fidelity.md`` and its pictures; speed ``speed.json`` and ``speed.md``; gpu
runs three scripts, so that one session on a GPU machine measures every neural path: LEDiff
``gpu.json``, the MVDiffusion + LEDiff panorama ``panorama_gpu.json`` and the neural bracket
merges ``merge_gpu.json`` (each says so in its JSON and exits 0 without a CUDA GPU). Without a
name all three benchmarks run, one after another. ``--args`` passes options on to each script
of the benchmark, e.g. ``lediff bench fidelity --args="--maps city sunset --exposures 0"``; for
gpu they must suit all three (``--device``, ``--tiny``): run ``python bench/NAME.py`` for the rest.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import lediff_backend

from ..errors import BadInput

# name -> its scripts in bench/, each with how it takes DIR: None for the folder itself, or its one JSON file in it
BENCHMARKS = {
    "fidelity": {"fidelity": None},
    "speed": {"speed": None},
    "gpu": {"gpu": "gpu.json", "panorama_gpu": "panorama_gpu.json", "merge_gpu": "merge_gpu.json"},
}


def find_bench_dir() -> Path:
    """The checkout's ``bench/`` folder, found relative to this package like the demo finds the add-on."""
    folder = Path(lediff_backend.__file__).resolve().parents[2] / "bench"
    if not all((folder / f"{script}.py").is_file() for scripts in BENCHMARKS.values() for script in scripts):
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
        for script, report in BENCHMARKS[name].items():
            target = out / report if report else out
            command = [sys.executable, str(folder / f"{script}.py"), "--out", str(target), *shlex.split(args.args)]
            print(f"lediff bench: {script} -> {target}", file=sys.stderr, flush=True)
            code = subprocess.run(command, stdin=subprocess.DEVNULL).returncode
            status = status or code
    return status
