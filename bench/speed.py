"""Speed of every part against its baseline in the same run: the other benchmarks, merged.

Runs each benchmark beside this file in a subprocess of this interpreter, one after another:
``projection.py`` (ours vs py360convert), ``classic.py`` (convert time and peak RSS per width vs
an I/O-only baseline), ``server.py`` (spawn -> ready; a convert through the server vs direct),
and, where they exist, ``addon.py`` (apply_world) and ``merge.py`` (bracket merge vs OpenCV).
A missing script is listed as skipped, a failing one with its exit code and the end of its
stderr; the others still run. A benchmark without a reader here (``addon``) shows each timing
and ratio its JSON holds.

Writes to ``--out DIR``: ``speed.json`` (machine, each benchmark's own JSON under its name, the
headline rows; also printed) and ``speed.md`` (the rows as a table: ours, the baseline, their
ratio, the target and whether it is met).

    python bench/speed.py --out DIR [--only projection classic] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from _common import emit, machine

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("projection", "classic", "server", "addon", "merge")


class Row(NamedTuple):
    benchmark: str
    case: str
    ours: str
    baseline: str
    ratio: str
    target: str
    met: bool | None


def projection_rows(result: dict) -> list[Row]:
    rows = []
    for case in ("equirect_to_cubemap", "equirect_to_perspective"):
        wall = result[case]["wall_s"]
        rows.append(Row(
            "projection", f"{case} (4096 wide input)", f"{wall['ours']:.3f} s",
            f"py360convert {wall['py360convert_warm']:.3f} s (cached maps)",
            f"speed-up {wall['speedup_vs_warm']:.2f}×", f"speed-up ≥ {result[case]['target_speedup_vs_warm']:g}×",
            result[case]["meets_target"],
        ))
    return rows


def classic_rows(result: dict) -> list[Row]:
    targets = result["targets"]
    rows = []
    for case in result["cases"]:
        ours, floor = case["classic_convert"], case["io_baseline"]
        target, met = "", None
        if case["width"] == 4096:
            target, met = f"≤ {targets['4096_seconds_max']:g} s", ours["seconds"] <= targets["4096_seconds_max"]
        elif case["width"] == 8192:
            limit = targets["8192_peak_rss_mb_max"]
            target, met = f"≤ {limit:g} MB", ours["peak_rss_mb"] <= limit
        rows.append(Row(
            "classic", f"convert {case['width']}×{case['height']}",
            f"{ours['seconds']:.2f} s, {ours['peak_rss_mb']:.0f} MB",
            f"read + linearise + write {floor['seconds']:.2f} s, {floor['peak_rss_mb']:.0f} MB",
            f"{case['ratio_vs_io_baseline']:.2f}× the I/O time", target, met,
        ))
    return rows


def _wall(timing) -> float:
    """Wall seconds of a timing as ``_common.Timing`` JSON (a list) or a plain number."""
    return timing[0] if isinstance(timing, list) else timing


def server_rows(result: dict) -> list[Row]:
    ready, convert = _wall(result["ready_s"]), result["convert_2048x1024"]
    server, direct = _wall(convert["server_s"]), _wall(convert["direct_s"])
    ratio, limit = server / direct, convert["target_ratio"]
    return [
        Row("server", "spawn → ready", f"{ready:.3f} s", "", "", f"< {result['ready_target_s']:g} s",
            ready < result["ready_target_s"]),
        Row("server", "convert 2048×1024 through the server", f"{server:.3f} s", f"direct call {direct:.3f} s",
            f"{ratio:.3f}×", f"≤ {limit:g}×", ratio <= limit),
    ]


def merge_rows(result: dict) -> list[Row]:
    wall, size = result["wall_s"], "×".join(map(str, result["size"]))
    return [
        Row("merge", f"{result['brackets']} brackets {size}: align, deghost, merge", f"{wall['classic_merge']:.3f} s",
            f"OpenCV AlignMTB + MergeDebevec {wall['opencv_align_debevec']:.3f} s",
            f"{result['ratio_merge_vs_opencv_align_debevec']:.2f}× the time", f"≤ {result['target_s']:g} s",
            result["meets_target"]),
        Row("merge", "the merge alone", f"{wall['classic_fuse']:.3f} s",
            f"OpenCV MergeDebevec {wall['opencv_debevec']:.3f} s",
            f"{result['ratio_fuse_vs_opencv_debevec']:.2f}× the time", "", None),
    ]


def generic_rows(name: str, result: dict, path: str = "") -> list[Row]:
    """For a benchmark without a reader here: each timing (a ``wall_s`` or ``*_s`` number) and ratio."""
    rows = []
    for key, value in result.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict) and "wall_s" in value:
            rows.append(Row(name, where, f"{value['wall_s']:.3f} s", "", "", "", None))
        elif isinstance(value, dict) and key != "machine":
            rows += generic_rows(name, value, where)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and "target" not in key:
            if "ratio" in key or "speedup" in key:
                rows.append(Row(name, where, "", "", f"{value:.3g}", "", None))
            elif key.endswith("_s"):
                rows.append(Row(name, where, f"{value:.3f} s", "", "", "", None))
    return rows


READERS = {"projection": projection_rows, "classic": classic_rows, "server": server_rows, "merge": merge_rows}


def run_benchmark(name: str, repeat: int | None, work: Path) -> dict:
    """The benchmark's JSON, or ``{"status": "skipped" | "failed", ...}``."""
    script = HERE / f"{name}.py"
    if not script.is_file():
        return {"status": "skipped", "reason": f"bench/{name}.py does not exist yet"}
    output = work / f"{name}.json"
    command = [sys.executable, str(script), "--out", str(output)]
    command += ["--repeat", str(repeat)] if repeat is not None else []
    started = time.perf_counter()
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    print(f"speed: {name} exit {done.returncode}, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    if done.returncode != 0 or not output.is_file():
        return {"status": "failed", "exit_code": done.returncode, "stderr_tail": done.stderr[-1500:]}
    return json.loads(output.read_text(encoding="utf-8"))


def rows_of(name: str, result: dict) -> list[Row]:
    status = result.get("status")
    if status == "skipped":
        return [Row(name, f"skipped: {result['reason']}", "", "", "", "", None)]
    if status == "failed":
        last = (result["stderr_tail"].strip().splitlines() or ["no output"])[-1]
        return [Row(name, f"failed (exit {result['exit_code']}): {last}", "", "", "", "", False)]
    return READERS.get(name, lambda r: generic_rows(name, r))(result)


def markdown(rows: list[Row]) -> str:
    marks = {True: "yes", False: "**no**", None: ""}
    lines = ["| benchmark | case | ours | baseline (same run) | ratio | target | met |", "|---" * 7 + "|"]
    for row in rows:
        cells = [*row[:-1], marks[row.met]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--out", type=Path, required=True, help="folder for speed.json and speed.md")
    cli.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    cli.add_argument("--repeat", type=int, help="runs per case for every benchmark (default: each one's own)")
    args = cli.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lediff-speed-") as work:
        results = {name: run_benchmark(name, args.repeat, Path(work)) for name in args.only}
    rows = [row for name, result in results.items() for row in rows_of(name, result)]
    (args.out / "speed.md").write_text(markdown(rows), encoding="utf-8")
    report = {
        "benchmark": "speed",
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": [row._asdict() for row in rows],
        "benchmarks": results,
    }
    emit(report, args.out / "speed.json")
    return 0 if all(r.get("status") != "failed" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
