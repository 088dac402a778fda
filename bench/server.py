"""Server overhead: spawn -> ready, and a convert through the server vs direct, printed as JSON.

- ``ready_s``: spawn of ``python -m lediff_backend.server`` until its ``ready`` line arrives
  (target < 1 s: nothing heavy is imported before ``ready``).
- ``convert_2048x1024``: a classic convert timed through a warm stdio server (``submit`` to
  ``done``, as the client sees them) and by calling ``convert_file`` in this process; each ran
  once to warm up (imports, caches), then in turn on every round; ``ratio`` = server / direct
  (target <= 1.05).

Timing: best of ``--repeat``. The input is a synthetic LDR panorama (sky gradient, a sun,
sensor noise) written as PNG.

    .venv/bin/python bench/server.py [--repeat 5] [--out result.json]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import best_of, best_of_interleaved, emit, machine, parser
from PIL import Image

from lediff_backend.convert import convert_file

SERVER = [sys.executable, "-m", "lediff_backend.server"]


def write_panorama(path: Path, width: int = 2048, height: int = 1024) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    pixels = np.stack([0.4 + 0.4 * (1 - y), 0.5 + 0.3 * (1 - y), 0.9 - 0.5 * y], axis=-1)
    pixels[((x - 0.3) ** 2 * 4 + (y - 0.25) ** 2) < 0.002] = 1.0
    pixels = np.clip(pixels + rng.normal(0, 0.02, pixels.shape), 0, 1)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path)
    return path


class Server:
    """A stdio server subprocess, started and read as the add-on does."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert json.loads(self.proc.stdout.readline())["event"] == "ready"
        self.jobs = 0

    def convert(self, image: Path, output: Path) -> None:
        """Submit one convert job and read events until it is done."""
        self.jobs += 1
        job = {"kind": "convert", "params": {"input": str(image)}, "output": str(output)}
        self.proc.stdin.write(json.dumps({"op": "submit", "id": self.jobs, "job": job}).encode() + b"\n")
        self.proc.stdin.flush()
        while (event := json.loads(self.proc.stdout.readline()))["event"] not in ("done", "error"):
            pass
        assert event["event"] == "done", event

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)
        self.proc.stdout.close()


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    ready_s, _ = best_of(lambda: Server().close(), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image = write_panorama(folder / "panorama.png")
        server = Server()
        try:
            contenders = {
                "server_s": lambda: server.convert(image, folder / "server.exr"),
                "direct_s": lambda: convert_file(image, folder / "direct.exr"),
            }
            for warm_up in contenders.values():
                warm_up()
            best = best_of_interleaved(contenders, args.repeat)
        finally:
            server.close()
    emit(
        {
            "benchmark": "server",
            "machine": machine(),
            "repeat": args.repeat,
            "ready_s": ready_s,
            "ready_target_s": 1.0,
            "convert_2048x1024": {
                "server_s": best["server_s"].wall_s,
                "direct_s": best["direct_s"].wall_s,
                "ratio": best["server_s"].wall_s / best["direct_s"].wall_s,
                "target_ratio": 1.05,
            },
        },
        args.out,
    )


if __name__ == "__main__":
    main()
