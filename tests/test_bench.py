"""``lediff bench``: the fidelity benchmark at a tiny size, the speed report's bookkeeping, errors."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from PIL import Image

import lediff_backend
from lediff_backend import cli

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


@pytest.fixture
def speed(monkeypatch):
    """bench/speed.py loaded by its path (a bare ``import speed`` could find another module)."""
    monkeypatch.syspath_prepend(str(BENCH))  # for its ``from _common import ...``
    spec = importlib.util.spec_from_file_location("lediff_bench_speed", BENCH / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
