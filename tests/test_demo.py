"""``lediff demo`` end to end at a reduced size, and its helpers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import lediff_backend
from lediff_backend import demo
from lediff_backend.errors import BadInput
from lediff_backend.hdr.exr import read_exr

RENDER_WIDTH, RENDER_HEIGHT = 64, 48
PANORAMA_WIDTH = 256


@pytest.mark.blender
@pytest.mark.slow
def test_demo_writes_all_its_files(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "lediff_backend.cli", "demo", "--out", str(out), "--hdri", "sunrise",
               "--size", f"{RENDER_WIDTH}x{RENDER_HEIGHT}", "--samples", "4", "--width", str(PANORAMA_WIDTH)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    listed = result.stdout.split()
    expected = [out / f"sunrise_{name}" for name in
                ("photo.jpg", "hdr.exr", "preview.png", "render_photo.png", "render_hdr.png",
                 "render_truth.png", "lookdev.png")]
    assert listed == [str(path) for path in expected]
    assert all(path.is_file() for path in expected)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    for step in ("phone photo", "classic engine", "1/3", "2/3", "3/3", "side by side"):
        assert step in result.stderr

    hdr, _ = read_exr(out / "sunrise_hdr.exr")
    assert hdr.shape == (PANORAMA_WIDTH // 2, PANORAMA_WIDTH, 3)
    assert np.isfinite(hdr).all() and hdr.max() > 1.0  # expanded beyond the photo's white

    photo = Image.open(out / "sunrise_photo.jpg")
    assert photo.format == "JPEG" and photo.size == (PANORAMA_WIDTH, PANORAMA_WIDTH // 2)
    for name in ("render_photo", "render_hdr", "render_truth"):
        assert Image.open(out / f"sunrise_{name}.png").size == (RENDER_WIDTH, RENDER_HEIGHT)
    assert Image.open(out / "sunrise_preview.png").size == (PANORAMA_WIDTH, PANORAMA_WIDTH // 2)
    lookdev = Image.open(out / "sunrise_lookdev.png")
    assert lookdev.width == 3 * RENDER_WIDTH and lookdev.height > RENDER_HEIGHT


def test_incident_ev_meters_the_light_on_a_white_ground():
    uniform = np.ones((64, 128, 3), np.float32)  # radiance 1 everywhere: irradiance π on any plane
    assert demo.incident_ev(uniform) == pytest.approx(0.0, abs=0.01)
    assert demo.incident_ev(uniform * 4) == pytest.approx(-2.0, abs=0.01)


def test_world_evs_match_maps_on_unclipped_pixels():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.01, 4.0, size=(32, 64, 3)).astype(np.float32)
    photo = np.clip(truth / 4, 0, 1)
    darker = truth * np.float32(2.0**-3)
    truth_ev, darker_ev = demo.world_evs(photo, [truth, darker], truth)
    assert truth_ev == pytest.approx(demo.incident_ev(truth))
    assert darker_ev - truth_ev == pytest.approx(3.0, abs=1e-3)
    with pytest.raises(BadInput):
        demo.world_evs(np.ones_like(photo), [truth], truth)  # all clipped


def test_missing_addon_is_a_clear_error(monkeypatch, tmp_path):
    fake = tmp_path / "site-packages" / "x" / "lediff_backend" / "__init__.py"
    monkeypatch.setattr(lediff_backend, "__file__", str(fake))
    with pytest.raises(BadInput, match="lediff_blender"):
        demo.find_source_root()


def test_side_by_side_has_one_column_per_image(tmp_path):
    paths = []
    for index, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        paths.append(tmp_path / f"{index}.png")
        Image.new("RGB", (40, 30), colour).save(paths[-1])
    output = demo.compose_side_by_side(paths, ["a", "b", "c"], tmp_path / "side.png")
    image = np.asarray(Image.open(output))
    assert image.shape == (30 + 16, 120, 3)
    assert tuple(image[-1, 50]) == (0, 255, 0)
