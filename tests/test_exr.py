"""Tests for lediff_backend.hdr.exr: OpenEXR read/write, header attributes, atomic output."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

from lediff_backend.errors import BadInput
from lediff_backend.hdr import exr
from lediff_backend.hdr.exr import HALF_MAX, REC709_CHROMATICITIES, read_exr, read_exr_info, write_exr

# Half floats keep 11 significant bits: relative error <= 2^-11 after rounding.
HALF_RTOL = 2.0**-11


def hdr_pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Positive scene-linear values spanning about 20 stops."""
    rng = np.random.default_rng(seed)
    return (2.0 ** rng.uniform(-10, 10, shape)).astype(np.float32)


def raw_write(path: Path, channels: dict[str, np.ndarray], **header) -> None:
    """Write an EXR with the bindings directly (for inputs write_exr refuses to make).

    The bindings ignore numpy strides, so every channel is made contiguous first.
    """
    contiguous = {name: np.ascontiguousarray(pixels) for name, pixels in channels.items()}
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, **header}, contiguous).write(str(path))


def file_header(path: Path) -> dict:
    return OpenEXR.File(str(path), header_only=True).header()


class TestWriteExr:
    def test_float_round_trip_is_exact(self, tmp_path):
        rgb = hdr_pixels((7, 11, 3))
        write_exr(tmp_path / "a.exr", rgb)
        back, _ = read_exr(tmp_path / "a.exr")
        assert back.dtype == np.float32 and back.shape == (7, 11, 3)
        np.testing.assert_array_equal(back, rgb)

    def test_strided_view_round_trip(self, tmp_path):
        # The bindings ignore numpy strides; write_exr must hand them contiguous memory.
        rgb = hdr_pixels((6, 10, 4))
        view = rgb[::2, ::3, 2::-1]
        write_exr(tmp_path / "v.exr", view)
        np.testing.assert_array_equal(read_exr(tmp_path / "v.exr")[0], view)

    def test_half_round_trip_within_half_precision(self, tmp_path):
        rgb = hdr_pixels((5, 6, 3))
        write_exr(tmp_path / "h.exr", rgb, half=True)
        back, _ = read_exr(tmp_path / "h.exr")
        assert back.dtype == np.float32
        np.testing.assert_allclose(back, rgb, rtol=HALF_RTOL)
        assert read_exr_info(tmp_path / "h.exr").bit_depth == 16

    def test_half_clamps_with_a_warning(self, tmp_path):
        rgb = np.full((2, 3, 3), 1.0, np.float32)
        rgb[0, 0] = [1e6, -1e6, 70000.0]
        with pytest.warns(UserWarning, match="3 values .* clamped"):
            write_exr(tmp_path / "c.exr", rgb, half=True)
        back, _ = read_exr(tmp_path / "c.exr")
        np.testing.assert_array_equal(back[0, 0], [HALF_MAX, -HALF_MAX, HALF_MAX])
        np.testing.assert_array_equal(back[1], 1.0)

    def test_half_in_range_does_not_warn(self, tmp_path):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            write_exr(tmp_path / "ok.exr", np.full((2, 2, 3), HALF_MAX, np.float32), half=True)

    def test_rgba_round_trip(self, tmp_path):
        rgba = hdr_pixels((4, 5, 4))
        write_exr(tmp_path / "a.exr", rgba)
        back, _ = read_exr(tmp_path / "a.exr", keep_alpha=True)
        np.testing.assert_array_equal(back, rgba)
        rgb, _ = read_exr(tmp_path / "a.exr")
        np.testing.assert_array_equal(rgb, rgba[..., :3])

    def test_y_written_as_luminance_reads_as_grey(self, tmp_path):
        y = hdr_pixels((3, 4))
        write_exr(tmp_path / "y.exr", y)
        assert [c.name for c in file_header(tmp_path / "y.exr")["channels"]] == ["Y"]
        back, _ = read_exr(tmp_path / "y.exr")
        np.testing.assert_array_equal(back, np.repeat(y[..., None], 3, axis=2))

    def test_latlong_header(self, tmp_path):
        write_exr(tmp_path / "pano.exr", hdr_pixels((4, 8, 3)), latlong=True)
        write_exr(tmp_path / "flat.exr", hdr_pixels((4, 8, 3)))
        assert file_header(tmp_path / "pano.exr")["envmap"] == OpenEXR.ENVMAP_LATLONG
        assert "envmap" not in file_header(tmp_path / "flat.exr")

    def test_standard_header(self, tmp_path):
        write_exr(tmp_path / "a.exr", hdr_pixels((2, 2, 3)))
        header = file_header(tmp_path / "a.exr")
        np.testing.assert_allclose(header["chromaticities"], REC709_CHROMATICITIES, atol=1e-6)
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION
        assert header["type"] == OpenEXR.scanlineimage

    def test_metadata_round_trip_as_strings(self, tmp_path):
        metadata = {"peak": 1234.5, "stops": 17, "engine": "classic", "sun": "[0.1, 0.2, 0.97]"}
        write_exr(tmp_path / "m.exr", hdr_pixels((2, 2, 3)), metadata=metadata)
        _, attributes = read_exr(tmp_path / "m.exr")
        assert {key: attributes[key] for key in metadata} == {
            "peak": "1234.5",
            "stops": "17",
            "engine": "classic",
            "sun": "[0.1, 0.2, 0.97]",
        }
        assert all(isinstance(value, str) for value in attributes.values())

    def test_metadata_may_not_override_standard_attributes(self, tmp_path):
        with pytest.raises(ValueError, match="compression"):
            write_exr(tmp_path / "m.exr", hdr_pixels((2, 2, 3)), metadata={"compression": "none"})
        assert not (tmp_path / "m.exr").exists()

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_values_are_refused(self, tmp_path, bad):
        rgb = hdr_pixels((3, 3, 3))
        rgb[1, 2, 0] = bad
        with pytest.raises(ValueError, match="1 pixel values are NaN or infinite"):
            write_exr(tmp_path / "bad.exr", rgb)
        assert os.listdir(tmp_path) == []

    def test_wrong_shape_is_refused(self, tmp_path):
        with pytest.raises(ValueError, match="shape"):
            write_exr(tmp_path / "bad.exr", np.zeros((2, 2, 2), np.float32))


class TestAtomicWrite:
    def test_leaves_only_the_target(self, tmp_path):
        write_exr(tmp_path / "out.exr", hdr_pixels((3, 3, 3)))
        assert os.listdir(tmp_path) == ["out.exr"]

    def test_failure_mid_write_leaves_nothing_and_keeps_an_old_file(self, tmp_path, monkeypatch):
        class FailingFile:
            def __init__(self, header, channels):
                pass

            def write(self, path):
                Path(path).write_bytes(b"v/1\x01 half an EXR")
                raise RuntimeError("disk full")

        write_exr(tmp_path / "old.exr", hdr_pixels((2, 2, 3)))
        before = (tmp_path / "old.exr").read_bytes()
        monkeypatch.setattr(exr.OpenEXR, "File", FailingFile)
        for name in ("new.exr", "old.exr"):
            with pytest.raises(RuntimeError, match="disk full"):
                write_exr(tmp_path / name, hdr_pixels((2, 2, 3)))
        assert os.listdir(tmp_path) == ["old.exr"]
        assert (tmp_path / "old.exr").read_bytes() == before

    def test_missing_folder_is_bad_input(self, tmp_path):
        with pytest.raises(BadInput, match="output folder does not exist"):
            write_exr(tmp_path / "nope" / "a.exr", hdr_pixels((2, 2, 3)))


class TestReadExr:
    def test_separate_half_channels(self, tmp_path):
        rgb = hdr_pixels((3, 4, 3)).astype(np.float16)
        raw_write(tmp_path / "s.exr", {c: rgb[..., i] for i, c in enumerate("RGB")})
        back, _ = read_exr(tmp_path / "s.exr")
        assert back.dtype == np.float32
        np.testing.assert_array_equal(back, rgb.astype(np.float32))

    def test_mixed_pixel_types_with_alpha(self, tmp_path):
        # The bindings cannot group float R,G,B with a half A into one "RGBA" array.
        rgb = hdr_pixels((3, 4, 3))
        alpha = np.linspace(0, 1, 12, dtype=np.float16).reshape(3, 4)
        raw_write(tmp_path / "m.exr", {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2], "A": alpha})
        back, _ = read_exr(tmp_path / "m.exr", keep_alpha=True)
        np.testing.assert_array_equal(back[..., :3], rgb)
        np.testing.assert_array_equal(back[..., 3], alpha.astype(np.float32))
        assert read_exr_info(tmp_path / "m.exr").bit_depth == 32

    def test_missing_alpha_is_opaque(self, tmp_path):
        write_exr(tmp_path / "a.exr", hdr_pixels((2, 3, 3)))
        back, _ = read_exr(tmp_path / "a.exr", keep_alpha=True)
        np.testing.assert_array_equal(back[..., 3], 1.0)

    def test_luminance_with_alpha(self, tmp_path):
        y, alpha = hdr_pixels((2, 3)), np.full((2, 3), 0.5, np.float32)
        raw_write(tmp_path / "ya.exr", {"Y": y, "A": alpha})
        back, _ = read_exr(tmp_path / "ya.exr", keep_alpha=True)
        np.testing.assert_array_equal(back, np.stack([y, y, y, alpha], axis=-1))

    def test_no_colour_channels_is_bad_input(self, tmp_path):
        raw_write(tmp_path / "z.exr", {"Z": np.ones((2, 2), np.float32)})
        with pytest.raises(BadInput, match=r"no R, G, B or Y channels \(found: Z\)"):
            read_exr(tmp_path / "z.exr")

    def test_info_from_header(self, tmp_path):
        write_exr(tmp_path / "a.exr", hdr_pixels((5, 9, 3)))
        assert read_exr_info(tmp_path / "a.exr") == exr.ExrInfo(width=9, height=5, bit_depth=32)

    @pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
    def test_truncated_file_is_bad_input(self, tmp_path, studiolights, keep):
        data = studiolights["forest"].read_bytes()
        path = tmp_path / "cut.exr"
        path.write_bytes(data[: int(len(data) * keep)])
        with pytest.raises(BadInput, match=f"not a readable OpenEXR file .*{path.name}"):
            read_exr(path)

    @pytest.mark.parametrize("content", [b"", b"hello, not an image\n", b"v/1\x01\x02\x00\x00\x00"])
    def test_non_exr_is_bad_input(self, tmp_path, content):
        path = tmp_path / "x.exr"
        path.write_bytes(content)
        with pytest.raises(BadInput, match="x.exr"):
            read_exr(path)
        with pytest.raises(BadInput, match="x.exr"):
            read_exr_info(path)


class TestStudioLights:
    def test_all_eight_read(self, studiolights):
        assert len(studiolights) == 8
        for name, path in studiolights.items():
            pixels, attributes = read_exr(path)
            assert pixels.shape == (512, 1024, 3), name
            assert pixels.dtype == np.float32
            assert np.isfinite(pixels).all(), name
            assert pixels.max() > 1.0, name  # real HDR: highlights above display white
            assert read_exr_info(path) == exr.ExrInfo(1024, 512, 32)
            assert "Software" in attributes
