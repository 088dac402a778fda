"""Progress lines on stderr for long CLI steps (stdout stays free for results)."""

from __future__ import annotations

import sys
import time


class StderrProgress:
    """``progress(stage, step, total)`` callback printing ``[step/total] stage`` with elapsed time."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.started = time.perf_counter()

    def __call__(self, stage: str, step: int, total: int) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"{self.prefix}: [{step + 1}/{total}] {stage} ({elapsed:.1f} s)", file=sys.stderr, flush=True)
