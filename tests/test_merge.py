"""Bracket merge: ``classic/merge.py`` with ``align``, ``response``, ``ghosts`` and ``brackets``, the
``merge`` service, ``lediff merge`` and the server's ``merge`` job.

The quality bars of issue 9 run on the eight real CC0 HDRIs in Blender's bpy wheel: brackets at
−2/0/+2 EV around the metered exposure, through a sampled LEDiff CRF, 8-bit, with a textured
square pasted at a different place in each. Scale: the merge is in the reference exposure's
units (its EV is 0 of −2/0/+2), so the truth is the HDRI times ``2**ev0`` (the exposure the
reference was shot at) with the square where the reference saw it. Light above the darkest
bracket's white (4 in those units: the sun, lamps) is recorded by no image, so the truth is
clipped there; no merge can know more.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import ExifTags, Image

from lediff_backend import cli
from lediff_backend.classic.align import mtb_shift, shift_image
from lediff_backend.classic.brackets import ExifExposure, exposure_ev, read_exif_exposure
from lediff_backend.classic.merge import (
    check_bracket,
    default_reference,
    fuse,
    merge_brackets,
    weight_hat,
    weight_triangle,
)
from lediff_backend.classic.response import inverse_response, recover_response, tabulated_response
from lediff_backend.errors import BadInput, BadRequest, MissingWeights
from lediff_backend.hdr.color import CRF, inverse_crf_lediff, sample_crf_params, srgb_to_linear
from lediff_backend.hdr.exposure import expose, metered_ev, quantize
from lediff_backend.hdr.exr import read_exr
from lediff_backend.hdr.gainmap import decode_gainmap_jpeg
from lediff_backend.hdr.imageio import read_image
from lediff_backend.hdr.ldr import write_png
from lediff_backend.hdr.metrics import fit_scale, log_luminance_rmse
from lediff_backend.merge import merge_files
from lediff_backend.sample_data import STUDIOLIGHT_NAMES
from tests.test_server_stdio import SERVER, Backend

EVS = [-2.0, 0.0, 2.0]
SQUARE = 48  # pixels, on the 1024x512 HDRIs
OUTSIDE_RMSE_MAX = 0.1  # stops, issue 9
GHOST_RATIO_MIN = 3.0  # the plain Debevec merge's error inside the moving square over ours
_SCRIPT = Path(sys.executable).with_name("lediff")
LEDIFF = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "lediff_backend.cli"]


def bracket_with_mover(hdr: np.ndarray, seed: int, crf: CRF | None = None) -> SimpleNamespace:
    """8-bit −2/0/+2 EV brackets of ``hdr`` through a sampled CRF, a textured square moving
    between them; the truth in the reference's units and the square's region."""
    rng = np.random.default_rng(seed)
    height, width = hdr.shape[:2]
    ev0 = metered_ev(hdr)
    crf = crf or sample_crf_params(rng)
    cells = rng.uniform(0.3, 3.0, size=(SQUARE // 8, SQUARE // 8, 3))  # around mid-grey at the reference
    square = (np.kron(cells, np.ones((8, 8, 1))) * 0.18 * 2.0**-ev0).astype(np.float32)
    xs = rng.choice(np.arange(SQUARE, width - 2 * SQUARE, SQUARE + 16), size=len(EVS), replace=False)
    ys = rng.integers(height // 4, 3 * height // 4 - SQUARE, size=len(EVS))
    region = np.zeros((height, width), bool)
    images, scenes = [], []
    for x, y, ev in zip(xs, ys, EVS):
        scene = hdr.copy()
        scene[y : y + SQUARE, x : x + SQUARE] = square
        region[y : y + SQUARE, x : x + SQUARE] = True
        scenes.append(scene)
        images.append(quantize(expose(scene, ev0 + ev, crf)))
    white = 2.0 ** -min(EVS)  # the darkest image's white in the reference's units
    truth = np.minimum(scenes[1] * np.float32(2.0**ev0), white)
    square_truth = np.minimum(scenes[0] * np.float32(2.0**ev0), white)  # as image 0 saw it
    return SimpleNamespace(images=images, crf=crf, truth=truth, region=region, ev0=ev0,
                           corners=list(zip(ys, xs)), square_truth=square_truth)


def plain_debevec(images: list[np.ndarray], crf: CRF) -> np.ndarray:
    """The baseline: OpenCV's MergeDebevec with the same known response, else our fuse
    without ghost removal (the same plain weighted average)."""
    try:
        import cv2
    except ImportError:
        return fuse(images, EVS, inverse_response=inverse_response(crf), deghost=False)[0]
    table = np.maximum(inverse_crf_lediff(np.linspace(0, 1, 256), crf), 1e-8)
    response = np.repeat(table[:, None, None], 3, axis=2).astype(np.float32)
    codes = [np.round(im[..., ::-1] * 255).astype(np.uint8) for im in images]  # OpenCV wants BGR
    return cv2.createMergeDebevec().process(codes, np.float32(2.0 ** np.array(EVS)), response)[..., ::-1]


@pytest.fixture(scope="module")
def hdris(studiolights) -> dict[str, np.ndarray]:
    return {name: read_image(path).pixels for name, path in studiolights.items()}


@pytest.fixture(scope="module", params=STUDIOLIGHT_NAMES)
def moving(request, hdris) -> SimpleNamespace:
    case = bracket_with_mover(hdris[request.param], STUDIOLIGHT_NAMES.index(request.param))
    case.baseline = plain_debevec(case.images, case.crf)
    return case


def ghost_ratio(case: SimpleNamespace, hdr: np.ndarray) -> float:
    return log_luminance_rmse(case.baseline, case.truth, case.region) / log_luminance_rmse(hdr, case.truth, case.region)


class TestQualityOnRealData:
    def test_known_response(self, moving):
        merged = merge_brackets(moving.images, EVS, response=moving.crf, wrap=True)
        assert merged.shifts == [(0, 0)] * 3
        assert log_luminance_rmse(merged.hdr, moving.truth, ~moving.region) <= OUTSIDE_RMSE_MAX
        assert ghost_ratio(moving, merged.hdr) >= GHOST_RATIO_MIN

    def test_recovered_response(self, moving):
        """A recovered response has no absolute scale of its own (code 1 -> 1 is extrapolated),
        so its merge is compared after the one global factor that fits it best."""
        hdr = merge_brackets(moving.images, EVS, response="recover", wrap=True).hdr
        hdr = hdr * fit_scale(hdr, moving.truth)
        assert log_luminance_rmse(hdr, moving.truth, ~moving.region) <= OUTSIDE_RMSE_MAX
        assert ghost_ratio(moving, hdr) >= GHOST_RATIO_MIN


@pytest.fixture(scope="module")
def static(hdris) -> SimpleNamespace:
    ev0 = metered_ev(hdris["forest"])
    images = [quantize(expose(hdris["forest"], ev0 + ev)) for ev in EVS]
    return SimpleNamespace(images=images, truth=np.minimum(hdris["forest"] * np.float32(2.0**ev0), 4.0))


class TestFuse:
    def test_static_scene_has_no_ghosts(self, static):
        hdr, ghost = fuse(static.images, EVS, inverse_response=srgb_to_linear, wrap=True)
        plain, _ = fuse(static.images, EVS, inverse_response=srgb_to_linear, deghost=False)
        assert (ghost > 0.5).mean() < 0.002
        assert log_luminance_rmse(hdr, static.truth) <= 0.02
        assert log_luminance_rmse(hdr, plain) <= 0.01

    def test_strips_give_the_whole_image_result(self, static):
        whole = fuse(static.images, EVS, inverse_response=srgb_to_linear, threads=1)
        strips = fuse(static.images, EVS, inverse_response=srgb_to_linear, threads=3)
        np.testing.assert_array_equal(whole[0], strips[0])
        np.testing.assert_array_equal(whole[1], strips[1])

    def test_clipped_everywhere_is_the_darkest_white(self):
        images = [np.ones((16, 16, 3), np.float32)] * 3
        hdr, _ = fuse(images, EVS, inverse_response=srgb_to_linear)
        np.testing.assert_allclose(hdr, 4.0, rtol=1e-5)  # the −2 EV image's white, in the 0 EV image's units

    def test_reference_decides_where_the_mover_is(self, hdris):
        case = bracket_with_mover(hdris["interior"], 3)
        inverse = inverse_response(case.crf)
        y, x = case.corners[0]
        inner = np.zeros(case.region.shape, bool)
        inner[y + 4 : y + SQUARE - 4, x + 4 : x + SQUARE - 4] = True  # where image 0 saw the square
        background = np.minimum(hdris["interior"] * np.float32(2.0**case.ev0), 4.0)
        first = fuse(case.images, EVS, inverse_response=inverse, reference=0)[0] * np.float32(2.0 ** -EVS[0])
        middle = fuse(case.images, EVS, inverse_response=inverse)[0]
        assert log_luminance_rmse(first, case.square_truth, inner) <= 0.1
        assert log_luminance_rmse(middle, background, inner) <= 0.1

    def test_ghost_mask_wraps_across_the_seam(self, hdris):
        """A thing at the right edge of a panorama: its mask goes on across the seam, smoothly."""
        hdr = hdris["city"]
        ev0 = metered_ev(hdr)
        images = [quantize(expose(hdr, ev0 + ev)) for ev in EVS]
        images[0] = images[0].copy()
        images[0][200:240, -16:] = 0.5
        _, ghost = fuse(images, EVS, inverse_response=srgb_to_linear, wrap=True)
        _, flat = fuse(images, EVS, inverse_response=srgb_to_linear, wrap=False)
        assert ghost[220, -8] == flat[220, -8] == pytest.approx(1.0)
        assert ghost[220, 2] > 0.5 and flat[220, 2] == 0.0
        assert abs(ghost[220, 0] - ghost[220, -1]) < 0.1


@pytest.fixture(scope="module")
def pair(hdris) -> tuple:
    """Courtyard, a sampled CRF, its metered EV and the 0 EV image."""
    hdr = hdris["courtyard"]
    crf = sample_crf_params(np.random.default_rng(7))
    ev0 = metered_ev(hdr)
    return hdr, crf, ev0, quantize(expose(hdr, ev0, crf))


class TestAlign:
    def test_recovers_a_known_shift(self, pair):
        hdr, crf, ev0, reference = pair
        crop = slice(40, 472), slice(100, 900)
        moved = shift_image(hdr, (5, -9))
        dark = quantize(expose(moved[crop], ev0 - 2, crf))
        assert mtb_shift(reference[crop], dark) == (-5, 9)

    def test_recovers_a_turn_across_the_seam(self, pair):
        hdr, crf, ev0, reference = pair
        bright = quantize(expose(np.roll(hdr, (-3, 700), axis=(0, 1)), ev0 + 2, crf))
        shift = mtb_shift(reference, bright, wrap=True)
        assert shift == (3, -700 + 1024)  # the same turn, the short way round
        np.testing.assert_array_equal(shift_image(bright, shift, wrap=True)[8:-8], quantize(expose(
            hdr, ev0 + 2, crf))[8:-8])

    def test_merge_aligns_a_turned_bracket(self, pair):
        hdr, crf, ev0, _ = pair
        images = [quantize(expose(np.roll(hdr, (0, 300 * k), axis=(0, 1)), ev0 + ev, crf)) for k, ev in enumerate(EVS)]
        images = [np.roll(im, (0, -300), axis=(0, 1)) for im in images]  # the reference is unmoved
        merged = merge_brackets(images, EVS, response=crf, wrap=True)
        assert merged.shifts == [(0, 300), (0, 0), (0, -300)]
        truth = np.minimum(hdr * np.float32(2.0**ev0), 4.0)
        assert log_luminance_rmse(merged.hdr, truth) <= OUTSIDE_RMSE_MAX


@pytest.fixture(scope="module")
def blocks() -> np.ndarray:
    """A scene of random flat patches over 12 stops (real scenes are tested above)."""
    rng = np.random.default_rng(0)
    patches = 2.0 ** rng.uniform(-9, 3, size=(32, 64, 3)).astype(np.float32)
    return np.repeat(np.repeat(patches, 8, axis=0), 8, axis=1)


class TestResponse:
    @pytest.mark.parametrize("response", [CRF(0.6, 0.9), CRF(0.4, 1.1), "srgb"], ids=str)
    def test_recovers_a_known_response(self, blocks, response):
        images = [quantize(expose(blocks, ev, response)) for ev in EVS]
        table = recover_response(images, EVS)
        truth = inverse_response(response)(np.linspace(0, 1, 256, dtype=np.float32))
        stops = np.log2(table[10:251] / truth[10:251, None])
        assert np.abs(stops).max() <= 0.05  # codes 10-250; the ends are extrapolated
        assert table[0].tolist() == [0, 0, 0] and (np.diff(table, axis=0) >= 0).all()

    def test_tabulated_response_interpolates(self):
        table = np.array([0.0, 0.2, 1.0], np.float32)
        inverse = tabulated_response(table)
        np.testing.assert_allclose(inverse(np.array([0.0, 0.25, 0.5, 1.0])), [0.0, 0.1, 0.2, 1.0], atol=1e-6)
        per_channel = tabulated_response(np.stack([table, table * 0.5, table], axis=1))
        np.testing.assert_allclose(per_channel(np.full((1, 1, 3), 0.5)), [[[0.2, 0.1, 0.2]]], atol=1e-6)

    def test_named_responses(self):
        x = np.linspace(0, 1, 11, dtype=np.float32)
        np.testing.assert_allclose(inverse_response("srgb")(x), srgb_to_linear(x))
        np.testing.assert_allclose(inverse_response("linear")(x), x)
        np.testing.assert_allclose(inverse_response(CRF(0.5, 1.0))(x), inverse_crf_lediff(x, CRF(0.5, 1.0)))
        with pytest.raises(ValueError, match="unknown response"):
            inverse_response("gamma")


def test_weighting_functions():
    z = np.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(weight_triangle(z), [0.0, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(weight_hat(z), [0.0, 1 - 0.5**12, 1.0, 0.0])


def test_default_reference_is_the_middle_exposure():
    assert default_reference([2.0, -2.0, 0.0]) == 2
    assert default_reference([-3.0, -1.0, 1.0, 3.0]) == 1  # of two middles, the darker


class TestErrors:
    image = np.zeros((8, 8, 3), np.float32)

    @pytest.mark.parametrize("images, evs, reference, message", [
        ([image], [0.0], None, "at least two images"),
        ([image, image], [0.0], None, "got 1 EVs for 2 images"),
        ([image, np.zeros((8, 9, 3), np.float32)], [0.0, 2.0], None, "differ in size"),
        ([image, image, image], [1.0, 1.0, 1.01], None, "same exposure"),
        ([image, image], [0.0, 2.0], 2, "reference 2 is not an image"),
    ])
    def test_not_a_bracket(self, images, evs, reference, message):
        with pytest.raises(BadInput, match=message):
            check_bracket(images, evs, reference)
        with pytest.raises(BadInput, match=message):
            merge_brackets(images, evs, reference=reference)

    def test_unknown_response(self):
        with pytest.raises(BadInput, match="unknown response 'gamma'.*'recover'"):
            merge_brackets([self.image, self.image], [0.0, 2.0], response="gamma")

    def test_missing_exif_without_evs(self, pngs, tmp_path):
        with pytest.raises(BadInput, match=r"no exposure time in the EXIF of b0\.png, b1\.png, b2\.png.*--ev"):
            merge_files(pngs, tmp_path / "out.exr")

    def test_raw_without_rawpy(self, tmp_path, monkeypatch):
        monkeypatch.setitem(sys.modules, "rawpy", None)  # as if it were not installed
        raw = tmp_path / "shot.CR2"
        raw.write_bytes(b"II*\x00")
        with pytest.raises(BadInput, match="install rawpy"):
            merge_files([raw, raw], tmp_path / "out.exr", evs=[0, 1])

    def test_hdr_input(self, studiolights, pngs, tmp_path):
        with pytest.raises(BadInput, match="already HDR"):
            merge_files([studiolights["city"], pngs[1]], tmp_path / "out.exr", evs=[0, 1])

    def test_engines(self, pngs, tmp_path):
        with pytest.raises(MissingWeights, match="(?s)no GMODiff .* in .*models.*dareg_mask.pth"):
            merge_files(pngs, tmp_path / "out.exr", evs=EVS, engine="gmodiff", model_dir=tmp_path / "models")
        with pytest.raises(BadRequest, match="unknown merge engine 'magic'"):
            merge_files(pngs, tmp_path / "out.exr", evs=EVS, engine="magic")
        assert not (tmp_path / "out.exr").exists()


# Files: EXIF, the service, the CLI and the server -------------------------------------------


@pytest.fixture(scope="module")
def city(hdris) -> SimpleNamespace:
    """City at 512x256 (quick to merge), −2/0/+2 EV sRGB brackets and the truth they imply."""
    hdr = hdris["city"][::2, ::2] + hdris["city"][1::2, 1::2]
    ev0 = metered_ev(hdr)
    return SimpleNamespace(images=[quantize(expose(hdr, ev0 + ev)) for ev in EVS],
                           truth=np.minimum(hdr * np.float32(2.0**ev0), 4.0), ev0=ev0)


@pytest.fixture(scope="module")
def pngs(city, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("brackets")
    paths = [folder / f"b{i}.png" for i in range(len(EVS))]
    for path, image in zip(paths, city.images):
        write_png(path, image)
    return paths


def write_jpeg_with_exif(path: Path, pixels: np.ndarray, seconds: float, f_number: float | None, iso: int) -> Path:
    exif = Image.Exif()
    tags = exif.get_ifd(ExifTags.IFD.Exif)
    tags[ExifTags.Base.ExposureTime] = seconds
    tags[ExifTags.Base.ISOSpeedRatings] = iso
    if f_number is not None:
        tags[ExifTags.Base.FNumber] = f_number
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(path, quality=95, exif=exif)
    return path


class TestExif:
    def test_exposure_from_exif(self, city, tmp_path):
        path = write_jpeg_with_exif(tmp_path / "a.jpg", city.images[1], 1 / 60, 8.0, 200)
        exposure = read_exif_exposure(path)
        assert exposure == ExifExposure(pytest.approx(1 / 60), 8.0, 200.0)
        assert exposure_ev(exposure) == pytest.approx(math.log2(1 / 60 * 2 / 64))
        assert read_exif_exposure(tmp_path / "missing.jpg") is None

    def test_merge_takes_evs_from_exif(self, city, tmp_path):
        # 1/240 s at f/8, 1/60 s at f/8, and +2 EV by aperture: 1/60 s at f/4.
        settings = [(1 / 240, 8.0), (1 / 60, 8.0), (1 / 60, 4.0)]
        paths = [write_jpeg_with_exif(tmp_path / f"e{i}.jpg", im, t, n, 100)
                 for i, (im, (t, n)) in enumerate(zip(city.images, settings))]
        meta = merge_files(paths, tmp_path / "out.exr")
        np.testing.assert_allclose(np.array(meta["evs"]) - meta["ev_reference"], EVS, atol=1e-9)
        assert meta["ev_reference"] == pytest.approx(math.log2(1 / 60 / 64))
        hdr, _ = read_exr(tmp_path / "out.exr")
        assert log_luminance_rmse(hdr, city.truth) <= OUTSIDE_RMSE_MAX  # JPEG q95 included

    def test_inconsistent_exif(self, city, tmp_path):
        paths = [write_jpeg_with_exif(tmp_path / "f.jpg", city.images[0], 1 / 240, 8.0, 100),
                 write_jpeg_with_exif(tmp_path / "g.jpg", city.images[1], 1 / 60, None, 100)]
        with pytest.raises(BadInput, match="records the f-number"):
            merge_files(paths, tmp_path / "out.exr")


def test_sixteen_bit_brackets(city, tmp_path):
    paths = [tmp_path / f"s{i}.png" for i in range(len(EVS))]
    for path, image in zip(paths, city.images):
        write_png(path, image, bits=16)
    meta = merge_files(paths, tmp_path / "out.exr", evs=EVS)
    hdr, _ = read_exr(tmp_path / "out.exr")
    assert meta["reference"] == 1 and log_luminance_rmse(hdr, city.truth) <= OUTSIDE_RMSE_MAX


class TestCli:
    def test_ev_takes_negative_values(self):
        args = cli.build_parser("merge").parse_args(["merge", "a.jpg", "b.jpg", "c.jpg", "-o", "o.exr", "--ev", "-2",
                                                     "0", "2", "--reference", "0", "--response", "recover"])
        assert args.inputs == ["a.jpg", "b.jpg", "c.jpg"] and args.ev == [-2.0, 0.0, 2.0]
        assert args.reference == 0 and args.response == "recover"

    def test_end_to_end(self, pngs, city, tmp_path):
        output = tmp_path / "merged.exr"
        gain_map = tmp_path / "merged.jpg"
        done = subprocess.run([*LEDIFF, "merge", *map(str, pngs), "-o", str(output), "--ev", "-2", "0", "2",
                               "--gainmap", str(gain_map)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        hdr, header = read_exr(output)
        assert header["lediff:engine"] == "classic" and header["lediff:reference"] == "1"
        assert log_luminance_rmse(hdr, city.truth) <= OUTSIDE_RMSE_MAX
        assert "merge: write 4/5" in done.stderr
        assert log_luminance_rmse(decode_gainmap_jpeg(gain_map.read_bytes())[1], hdr) <= 0.07

    def test_error_is_one_line_and_exit_2(self, pngs, tmp_path):
        done = subprocess.run([*LEDIFF, "merge", *map(str, pngs), "-o", str(tmp_path / "x.exr")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines()[-1].startswith("lediff merge: error: no exposure time in the EXIF")
        assert not (tmp_path / "x.exr").exists()


class TestServerJob:
    def test_merge_job(self, pngs, city, tmp_path):
        backend = Backend(tmp_path, SERVER)
        try:
            assert backend.next()["event"] == "ready"
            output = tmp_path / "job.exr"
            backend.send({"op": "submit", "id": "m", "job": {
                "kind": "merge", "params": {"inputs": [str(p) for p in pngs], "ev": EVS}, "output": str(output)}})
            events = backend.finished("m")
            assert events[0] == {"event": "accepted", "job": "m"}
            assert [e["stage"] for e in events if e["event"] == "progress"] == [
                "read", "align", "response", "merge", "write"]
            done = events[-1]
            assert done["event"] == "done", done
            assert done["output"] == str(output) and done["meta"]["evs"] == EVS and done["meta"]["reference"] == 1
            hdr, _ = read_exr(output)
            assert log_luminance_rmse(hdr, city.truth) <= OUTSIDE_RMSE_MAX

            backend.send({"op": "submit", "id": "n", "job": {
                "kind": "merge", "params": {"inputs": [str(p) for p in pngs]}, "output": str(tmp_path / "n.exr")}})
            error = backend.finished("n")[-1]
            assert error["event"] == "error" and error["code"] == "bad_input" and "EXIF" in error["message"]
        finally:
            backend.close()
