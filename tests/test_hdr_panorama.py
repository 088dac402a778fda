"""Prompt/photo -> HDR panorama on tiny random-init models, the pole fill and the photo view.

Random weights give noise, not pictures: these tests check the 2:1 layout, finiteness, the
wrap seam, non-constant poles, determinism, progress, cancel and errors end to end.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lediff_backend import errors
from lediff_backend.classic.poles import fill_poles
from lediff_backend.cli import main
from lediff_backend.hdr.exr import read_exr
from lediff_backend.hdr.metrics import wrap_seam_score
from lediff_backend.hdr.photo_view import paste_photo, photo_fov_deg, photo_to_view
from lediff_backend.hdr.projection import equirect_directions, equirect_to_perspective, resize_equirect
from lediff_backend.hdr.stitch import stitch_views
from lediff_backend.models.correspondence import ring_yaws
from lediff_backend.pipelines import hdr_panorama
from lediff_backend.pipelines.hdr_panorama import ldr_panorama, lediff_panorama, load_panorama_pipeline

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a sunset over the beach"
WIDTH = 128
STEPS = 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def pipes(tiny_root):
    return load_panorama_pipeline(tiny_root, "cpu")


def _latitude(height: int, width: int) -> np.ndarray:
    return np.degrees(np.arcsin(equirect_directions(height, width)[..., 2]))


def _band(height=128, width=256):
    """A panorama seen by the 8-view ring only: smooth, brighter toward the sky."""
    d = equirect_directions(height, width)
    azimuth = np.arctan2(d[..., 1], d[..., 0])
    truth = np.stack(
        [0.4 + 0.15 * np.sin(2 * azimuth) + 0.3 * d[..., 2], 0.5 + 0.2 * np.cos(3 * azimuth), 0.55 + 0.3 * d[..., 2]],
        axis=-1,
    ).astype(np.float32)
    views = [equirect_to_perspective(truth, 64, 64, 90.0, yaw) for yaw in ring_yaws()]
    return stitch_views(views, ring_yaws(), 90.0, height, width)


class TestFillPoles:
    def test_caps_are_filled_smoothly_and_the_band_is_kept(self):
        band, coverage = _band()
        filled = fill_poles(band, coverage)
        latitude = _latitude(*coverage.shape)
        known = coverage == 1
        np.testing.assert_array_equal(filled[known], band[known])
        assert np.isfinite(filled).all() and filled.min() >= band[known].min() - 1e-6
        for cap, rim in ((latitude > 50, known & (latitude > 35)), (latitude < -50, known & (latitude < -35))):
            assert np.abs(filled[cap].mean(axis=0) - band[rim].mean(axis=0)).max() < 0.1  # no dark hole
            assert filled[cap].std(axis=0).max() > 0.01  # not a constant cap
        # No step where the fill meets the band: the jump across the edge is like any row step.
        column = filled[:, 40]
        steps = np.abs(np.diff(column, axis=0)).max(axis=1)
        edge = np.argmax(coverage[:, 40] == 1)
        assert steps[edge - 2 : edge + 2].max() < 4 * np.median(steps) + 0.01

    def test_the_vertical_trend_continues(self):
        """A sky that brightens toward the band's top keeps brightening a little above it."""
        band, coverage = _band()
        filled = fill_poles(band, coverage)
        latitude = _latitude(*coverage.shape)[:, 0]
        edge_row = np.argmax(coverage[:, 0] == 1)
        assert filled[latitude > 80, :, 2].mean() > filled[edge_row, :, 2].mean()

    def test_nothing_to_fill(self):
        image = np.random.default_rng(0).random((32, 64, 3), dtype=np.float32)
        np.testing.assert_array_equal(fill_poles(image, np.ones((32, 64), np.float32)), image)


class TestPhotoView:
    def test_field_of_view_from_the_35mm_focal_length(self):
        assert photo_fov_deg(36, 24, 18.0) == pytest.approx(90.0)
        landscape, portrait = photo_fov_deg(4000, 3000, 26.0), photo_fov_deg(3000, 4000, 26.0)
        assert landscape == pytest.approx(67.3, abs=0.1) and portrait < landscape

    def test_the_photo_seen_by_view_zero_and_pasted_back(self):
        height, width = 128, 256
        truth = _band(height, width)[0] + 0.1
        photo = equirect_to_perspective(truth, 120, 80, 60.0)  # a 60° landscape photo along +X
        view, known = photo_to_view(photo, 60.0, 64, 90.0)
        expected = equirect_to_perspective(truth, 64, 64, 90.0)
        assert known[32, 32] == 1 and known[0, 0] == 0 and 0.2 < known.mean() < 0.35
        np.testing.assert_allclose(view[known == 1], expected[known == 1], atol=0.01)
        pasted = paste_photo(np.zeros_like(truth), photo, 60.0)
        centre = (slice(height // 2 - 8, height // 2 + 8), slice(width // 2 - 16, width // 2 + 16))
        np.testing.assert_allclose(pasted[centre], truth[centre], atol=0.01)
        assert (pasted[:, :40] == 0).all()  # nothing behind the photo's edges


@pytest.fixture(scope="module")
def run(pipes):
    """One small text -> panorama run shared by ``TestPanorama``: (hdr, stages, previews)."""
    stages, previews = [], []
    hdr = lediff_panorama(
        PROMPT,
        width=WIDTH,
        steps=STEPS,
        pipeline=pipes,
        poles="classic",
        progress=lambda *a: stages.append(a),
        preview=lambda stage, step, rgb: previews.append((stage, step, rgb.shape)),
        preview_every=1,
    )
    return hdr, stages, previews


class TestPanorama:
    def test_a_finite_seamless_two_to_one_hdr(self, run):
        hdr = run[0]
        assert hdr.shape == (WIDTH // 2, WIDTH, 3) and hdr.dtype == np.float32
        assert np.isfinite(hdr).all() and hdr.min() >= 0
        assert wrap_seam_score(hdr) < 2.0

    def test_poles_are_not_constant(self, run):
        hdr = run[0]
        log = np.log(hdr.mean(axis=-1) + 1e-4)
        rows = WIDTH // 2 // 10
        assert log[:rows].std() > 0.01 and log[-rows:].std() > 0.01

    def test_progress_and_previews_per_stage(self, run):
        _, stages, previews = run
        names = [s[0] for s in stages]
        assert names[0] == "views" and names.count("views") == STEPS
        assert names[STEPS] == "poles" and names[-1] == "done"
        assert {"highlight", "shadow"} <= set(names)
        assert previews[0] == ("views", 1, (256, 512, 3))  # the 8 views' latents, stitched
        assert {p[0] for p in previews} == {"views", "highlight", "shadow"}

    def test_deterministic(self, run, pipes):
        again = lediff_panorama(PROMPT, width=WIDTH, steps=STEPS, pipeline=pipes, poles="classic")
        np.testing.assert_array_equal(again, run[0])

    def test_generated_poles_keep_the_band(self, pipes):
        classic = ldr_panorama(PROMPT, pipes, width=WIDTH, steps=STEPS, poles="classic")
        generated = ldr_panorama(PROMPT, pipes, width=WIDTH, steps=STEPS, poles="generated")
        middle = np.abs(_latitude(WIDTH // 2, WIDTH)) < 30
        np.testing.assert_array_equal(generated[middle], classic[middle])  # same views, same band
        caps = np.abs(_latitude(WIDTH // 2, WIDTH)) > 60
        assert not np.allclose(generated[caps], classic[caps])
        assert generated[caps].std(axis=0).min() > 0.01

    def test_wider_than_the_views_is_stitched_at_their_resolution_and_enlarged(self, pipes):
        native = ldr_panorama(PROMPT, pipes, width=256, steps=STEPS, poles="classic")  # 64² views: 256 wide
        wide = ldr_panorama(PROMPT, pipes, width=512, steps=STEPS, poles="classic")
        assert wide.shape == (256, 512, 3)
        np.testing.assert_allclose(wide, np.clip(resize_equirect(native, 512), 0, 1), atol=1e-6)

    def test_photo_is_view_zero_and_stays_in_the_panorama(self, pipes, tmp_path):
        photo = np.zeros((48, 64, 3), np.float32)
        photo[...] = [0.9, 0.2, 0.1]
        photo[:, ::8] = [0.1, 0.8, 0.3]  # stripes: something to recognise
        ldr = ldr_panorama(PROMPT, pipes, image=photo, fov_deg=60.0, width=WIDTH, steps=STEPS, poles="classic")
        centre = equirect_to_perspective(ldr, 32, 24, 40.0)  # well inside the photo's 60°
        expected = equirect_to_perspective(paste_photo(np.zeros_like(ldr), photo, 60.0), 32, 24, 40.0)
        np.testing.assert_allclose(centre, expected, atol=0.02)

    def test_photo_fov_from_exif(self, tmp_path):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0xA405] = 26  # FocalLengthIn35mmFilm
        path = tmp_path / "photo.jpg"
        Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(path, exif=exif)
        photo, fov = hdr_panorama._read_photo(path, None)
        assert photo.shape == (30, 40, 3) and fov == pytest.approx(photo_fov_deg(40, 30, 26.0))
        assert hdr_panorama._read_photo(path, 75.0)[1] == 75.0

    def test_cancel_stops_within_a_step(self, pipes):
        stages = []
        with pytest.raises(errors.Cancelled):
            lediff_panorama(
                PROMPT,
                width=WIDTH,
                steps=STEPS,
                pipeline=pipes,
                progress=lambda *a: stages.append(a),
                should_cancel=lambda: True,
            )
        assert stages == [("views", 1, STEPS)]

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (dict(prompt=" "), "prompt or a photo"),
            (dict(width=100), "multiple of 16"),
            (dict(poles="sometimes"), "poles must be"),
            (dict(image=np.zeros((4, 4, 3), np.float32)), "at least 8x8"),
        ],
    )
    def test_bad_requests_fail_before_loading(self, tmp_path, kwargs, message):
        kwargs = {"prompt": PROMPT, **kwargs}
        with pytest.raises(errors.BadInput, match=message):
            lediff_panorama(kwargs.pop("prompt"), model_dir=tmp_path, **kwargs)

    def test_missing_weights_say_what_to_place_where(self, tmp_path):
        with pytest.raises(errors.MissingWeights, match="(?s)pano.ckpt.*convert-weights mvdiffusion"):
            load_panorama_pipeline(tmp_path, "cpu")


def test_panorama_command_end_to_end(tiny_root, tmp_path, capsys):
    out = tmp_path / "pano.exr"
    args = ["panorama", PROMPT, "-o", str(out), "--model-dir", str(tiny_root), "--steps", "2", "--width", "256"]
    assert main(args) == 0
    assert str(out) in capsys.readouterr().out
    pixels, header = read_exr(out)
    assert pixels.shape == (128, 256, 3) and np.isfinite(pixels).all()
    assert header["lediff:engine"] == "mvdiffusion+lediff" and "lediff:sun" in header


def test_benchmark_runs_on_tiny_models(capsys, monkeypatch):
    """bench/panorama_gpu.py on tiny models on the CPU: the JSON it prints is complete."""
    argv = ["panorama_gpu.py", "--tiny", "--device", "cpu", "--steps", "1", "--width", "64", "--repeat", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "bench" / "panorama_gpu.py"), run_name="__main__")
    assert done.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["caa_overhead"]["ratio"] > 0 and report["views"]["views"] == 8
    assert report["end_to_end"]["size"] == "64x32" and report["end_to_end"]["finite"]
    assert report["gpu"] is False and "target" not in report
