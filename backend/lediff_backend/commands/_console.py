"""Progress lines on stderr for long CLI steps (stdout stays free for results)."""

from __future__ import annotations

import sys
import time


class StderrProgress:
    """``progress(stage, step, total)`` callback printing ``prefix: stage step/total (elapsed)``.

    ``step`` counts the units of ``total`` already done, as the protocol's progress events do
    (a classic stage is announced with the stages before it, a diffusion step once it ends). A
    line is printed when the stage changes, when the stage completes, and otherwise at most
    once a second, so that a 50-step run does not flood the terminal.
    """

    def __init__(self, prefix: str, interval_s: float = 1.0) -> None:
        self.prefix = prefix
        self.interval_s = interval_s
        self.started = time.perf_counter()
        self._last: tuple[str, float] | None = None

    def __call__(self, stage: str, step: int, total: int) -> None:
        now = time.perf_counter()
        if self._last is not None and self._last[0] == stage and step < total and now - self._last[1] < self.interval_s:
            return
        self._last = (stage, now)
        print(f"{self.prefix}: {stage} {step}/{total} ({now - self.started:.1f} s)", file=sys.stderr, flush=True)
