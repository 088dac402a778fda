"""Shared helpers for the benchmarks: best-of-N timing, machine description, JSON output.

A benchmark builds one dict and hands it to ``emit``; it prints JSON on stdout and, with
``--out FILE``, writes the same JSON there. Timings keep the best wall time and, separately,
the best CPU time of this process: on a busy machine the CPU time of single-threaded code
is the steadier of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


def parser(description: str, repeat: int = 5) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares: ``--repeat``, ``--out``."""
    cli = argparse.ArgumentParser(description=description)
    cli.add_argument("--repeat", type=int, default=repeat, help=f"runs per case, best kept (default {repeat})")
    cli.add_argument("--out", type=Path, help="also write the JSON to this file")
    return cli


class Timing(NamedTuple):
    wall_s: float
    cpu_s: float


def best_of(function: Callable[[], Any], repeat: int) -> tuple[Timing, Any]:
    """Run ``function`` ``repeat`` times: the best wall and CPU seconds, and the last result."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, time.process_time() - start_cpu)
    return Timing(wall, cpu), result


def best_of_interleaved(functions: dict[str, Callable[[], Any]], repeat: int) -> dict[str, Timing]:
    """Best-of-``repeat`` timings for each function, running them in turn on every round.

    Interleaving exposes all contenders to the same background load, so their ratio holds
    up on a busy machine better than the absolute times do.
    """
    best = {name: Timing(float("inf"), float("inf")) for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            timing, _ = best_of(function, 1)
            best[name] = Timing(min(best[name].wall_s, timing.wall_s), min(best[name].cpu_s, timing.cpu_s))
    return best


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": load,
    }


def emit(result: dict[str, Any], out: Path | None = None) -> None:
    """Print ``result`` as indented JSON on stdout, and write it to ``out`` if given."""
    text = json.dumps(result, indent=2, sort_keys=False)
    print(text)
    sys.stdout.flush()
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
