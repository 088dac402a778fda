"""``lediff bench``: the fidelity benchmark at a tiny size, the speed report's bookkeeping, the
neural merge benchmark on tiny models, which scripts each benchmark runs, errors."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

import lediff_backend
from lediff_backend import cli
from lediff_backend.commands import bench as bench_command

BENCH = Path(__file__).resolve().parents[1] / "bench"
METRIC_KEYS = {
    "sh_irradiance_error", "clipped_log_rmse", "key_light_deg", "energy_ratio",
    "peak_stops", "range_stops", "diffuse_sphere_error", "glossy_sphere_error",
}
TINY = (
    "--maps city sunset --exposures 0 --responses crf --formats jpeg "
    "--width 128 --sphere-size 16 --samples 2 --tile 64"
)


@pytest.fixture(scope="module")
def fidelity(tmp_path_factory):
    out = tmp_path_factory.mktemp("fidelity")
    assert cli.main(["bench", "fidelity", "--out", str(out), f"--args={TINY}"]) == 0
    return out, json.loads((out / "fidelity.json").read_text())


@pytest.mark.blender
@pytest.mark.slow
class TestFidelity:
    def test_the_json_holds_every_case_engine_and_metric(self, fidelity):
        _, report = fidelity
        assert report["benchmark"] == "fidelity" and report["machine"]["cpu_count"] >= 1
        assert report["engines"]["baseline"]["status"] == report["engines"]["classic"]["status"] == "ran"
        lediff = report["engines"]["lediff"]
        assert lediff["status"] in ("ran", "skipped") and (lediff["status"] == "ran" or lediff["reason"])
        ran = [name for name, info in report["engines"].items() if info["status"] == "ran"]
        assert [(c["map"], c["response"], c["format"], c["exposure_offset_ev"]) for c in report["cases"]] == [
            ("city", "crf", "jpeg", 0.0), ("sunset", "crf", "jpeg", 0.0)]
        for case in report["cases"]:
            assert set(case["engines"]) == set(ran)
            for result in case["engines"].values():
                assert METRIC_KEYS <= set(result)
                assert all(v is None or math.isfinite(v) for v in result.values())
        assert set(report["per_map"]) == {"city", "sunset"} and set(report["per_exposure"]) == {"+0 EV"}
        assert set(report["per_response"]) == {"crf"}
        for summary in (report["summary"], *report["per_map"].values()):
            assert set(summary) == set(ran) and all(METRIC_KEYS <= set(s) for s in summary.values())
        # The baseline keeps the photo's clipped white: its peak is stops below the truth's.
        assert report["summary"]["baseline"]["peak_stops"] < -2

    def test_the_markdown_has_a_row_per_engine_and_map(self, fidelity):
        out, report = fidelity
        text = (out / "fidelity.md").read_text()
        header = next(line for line in text.splitlines() if line.startswith("| engine |"))
        assert header.count("|") == len(METRIC_KEYS) + 3  # engine, the metrics, seconds
        for label in (info["label"] for info in report["engines"].values() if info["status"] == "ran"):
            assert f"| {label} |" in text
            assert f"| city | {label} |" in text and f"| sunset | {label} |" in text

    def test_the_pictures_are_written(self, fidelity):
        out, _ = fidelity
        pictures = [out / "strip_city.png", out / "strip_sunset.png", *(out / f"chart_{k}.png" for k in METRIC_KEYS)]
        for path in pictures:
            with Image.open(path) as image:
                assert image.format == "PNG" and min(image.size) > 32
        with Image.open(out / "strip_city.png") as strip:
            assert strip.size[0] == 4 * 64  # three exposures and the spheres, 64 px each


def load_script(monkeypatch, name: str):
    """bench/NAME.py loaded by its path (a bare ``import speed`` could find another module)."""
    monkeypatch.syspath_prepend(str(BENCH))  # for its ``from _common import ...``
    spec = importlib.util.spec_from_file_location(f"lediff_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def speed(monkeypatch):
    return load_script(monkeypatch, "speed")


@pytest.fixture
def merge_gpu(monkeypatch):
    return load_script(monkeypatch, "merge_gpu")


def test_speed_rows_for_skipped_failed_and_unknown_benchmarks(speed):
    rows = speed.rows_of("merge", {"status": "skipped", "reason": "bench/merge.py does not exist yet"})
    rows += speed.rows_of("server", {"status": "failed", "exit_code": 1, "stderr_tail": "Traceback\nTypeError: x\n"})
    addon = {
        "machine": {"cpu_count": 2}, "apply_world": {"wall_s": 0.25, "cpu_s": 0.2},
        "pump": {"job_s": 4.0, "ticks": 9}, "merge_ratio": 1.25, "repeat": 3, "target_s": 1.0,
    }
    rows += speed.rows_of("addon", addon)
    assert [(r.benchmark, r.case, r.met) for r in rows] == [
        ("merge", "skipped: bench/merge.py does not exist yet", None),
        ("server", "failed (exit 1): TypeError: x", False),
        ("addon", "apply_world", None), ("addon", "pump.job_s", None), ("addon", "merge_ratio", None),
    ]
    assert [(r.ours, r.ratio) for r in rows[2:]] == [("0.250 s", ""), ("4.000 s", ""), ("", "1.25")]
    table = speed.markdown(rows).splitlines()
    assert len(table) == 2 + len(rows) and "skipped: bench/merge.py does not exist yet" in table[2]


def test_a_missing_bench_folder_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lediff_backend, "__file__", str(tmp_path / "a" / "b" / "lediff_backend" / "__init__.py"))
    assert cli.main(["bench", "speed"]) == 2
    assert "bench/ folder" in capsys.readouterr().err


def test_merge_gpu_on_tiny_models(merge_gpu, tmp_path, capsys):
    """bench/merge_gpu.py on tiny models on the CPU: both engines, every size, the same JSON in --out."""
    argv = ["--tiny", "--device", "cpu", "--sizes", "64x64,128x64", "--repeat", "1", "--out", str(tmp_path / "m.json")]
    assert merge_gpu.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "m.json").read_text())
    assert report["gpu"] is False and report["models"] == "tiny" and report["bracket_evs"] == [-2.0, 0.0, 2.0]
    engines = report["engines"]
    assert set(engines) == {"gmodiff", "lfdiff"}
    assert engines["gmodiff"]["denoising_steps"] == 1 and engines["lfdiff"]["paper"] == {"size": "1500x1000",
                                                                                         "seconds": 0.72}
    for engine in engines.values():
        assert engine["dtype"] == "float32" and engine["parameters_millions"] > 0
        assert [(r["size"], r["panorama"]) for r in engine["runs"]] == [("64x64", False), ("128x64", True)]
        assert all(r["seconds"] > 0 and r["peak_vram_gb"] is None and r["finite"] for r in engine["runs"])
    assert "vs_paper" not in engines["lfdiff"]  # only for full-size models on a GPU


def test_merge_gpu_compares_with_the_lfdiff_paper_at_its_size(merge_gpu):
    runs = [{"size": "2048x1024", "seconds": 9.0}, {"size": "1500x1000", "seconds": 0.9}]
    assert merge_gpu.vs_paper(runs) == 1.25 and merge_gpu.vs_paper(runs[:1]) is None


def test_merge_gpu_without_cuda_says_so(merge_gpu, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert merge_gpu.main([]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gpu"] is False and "no CUDA GPU" in report["message"] and "engines" not in report


def test_bench_gpu_runs_the_lediff_panorama_and_merge_scripts(tmp_path, monkeypatch):
    commands = []

    def run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(bench_command.subprocess, "run", run)
    assert cli.main(["bench", "gpu", "--out", str(tmp_path), "--args=--tiny --device cpu"]) == 0
    assert [(Path(c[1]).name, c[2:]) for c in commands] == [
        (f"{name}.py", ["--out", str(tmp_path / f"{name}.json"), "--tiny", "--device", "cpu"])
        for name in ("gpu", "panorama_gpu", "merge_gpu")
    ]
    commands.clear()
    assert cli.main(["bench", "--out", str(tmp_path)]) == 0
    assert [(Path(c[1]).name, Path(c[3]).name) for c in commands] == [
        ("fidelity.py", tmp_path.name), ("speed.py", tmp_path.name), ("gpu.py", "gpu.json"),
        ("panorama_gpu.py", "panorama_gpu.json"), ("merge_gpu.py", "merge_gpu.json"),
    ]
