"""Classic LDR -> HDR convert: wall time and peak memory per panorama size.

Each case runs in its own process (so peak RSS is that process's own), on an 8-bit PNG made
from a real CC0 HDRI: ``lediff convert`` against a baseline that only reads the PNG,
linearises it and writes the EXR (the I/O floor every engine pays).

    python bench/classic.py [--widths 2048 4096 8192] [--repeat 3] [--out FILE]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, machine, parser

BASELINE = """
import sys
from lediff_backend.classic.expand import linearise
from lediff_backend.hdr.imageio import read_image, write_image
write_image(sys.argv[2], linearise(read_image(sys.argv[1]).pixels), latlong=True)
"""


MAKE_INPUT = """
import sys
from lediff_backend.hdr.exposure import simulate_ldr
from lediff_backend.hdr.imageio import read_image
from lediff_backend.hdr.ldr import write_png
from lediff_backend.hdr.projection import resize_equirect
from lediff_backend.sample_data import studiolight_path
hdr = resize_equirect(read_image(studiolight_path("sunrise")).pixels, int(sys.argv[2]))
write_png(sys.argv[1], simulate_ldr(hdr).pixels)
"""


def make_input(folder: Path, width: int) -> Path:
    """An 8-bit PNG of the sunrise HDRI at ``width``, made in a child process.

    Linux hands a parent's peak RSS on to its children through fork and exec, so this process
    never holds a large image: the children's ``ru_maxrss`` is then their own.
    """
    path = folder / f"sunrise_{width}.png"
    subprocess.run([sys.executable, "-c", MAKE_INPUT, str(path), str(width)], check=True)
    return path


def run_child(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{command[:3]} failed: {process.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def best(command: list[str], repeat: int) -> dict:
    runs = [run_child(command) for _ in range(repeat)]
    return {"seconds": round(min(r[0] for r in runs), 3), "peak_rss_mb": round(max(r[1] for r in runs), 1)}


def main() -> None:
    cli = parser(__doc__.splitlines()[0], repeat=3)
    cli.add_argument("--widths", type=int, nargs="+", default=[2048, 4096, 8192])
    args = cli.parse_args()
    lediff = [sys.executable, "-m", "lediff_backend.cli", "convert"]
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for width in args.widths:
            source, output = make_input(folder, width), folder / "out.exr"
            ours = best([*lediff, str(source), "-o", str(output)], args.repeat)
            floor = best([sys.executable, "-c", BASELINE, str(source), str(output)], args.repeat)
            cases.append({
                "width": width,
                "height": width // 2,
                "classic_convert": ours,
                "io_baseline": floor,
                "ratio_vs_io_baseline": round(ours["seconds"] / floor["seconds"], 2),
            })
    emit({"benchmark": "classic_convert", "machine": machine(), "targets": {
        "4096_seconds_max": 3.0, "8192_peak_rss_mb_max": 2048}, "cases": cases}, args.out)


if __name__ == "__main__":
    main()
