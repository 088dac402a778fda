"""Tests for lediff_backend.hdr.radiance: RGBE read (flat, RLE, orientations) and write."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from lediff_backend.errors import BadInput
from lediff_backend.hdr.exr import read_exr
from lediff_backend.hdr.radiance import read_hdr, read_hdr_size, write_hdr

HEADER = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n"


def hdr_pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (2.0 ** rng.uniform(-12, 12, shape)).astype(np.float32)


def assert_rgbe_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """RGBE keeps 8 mantissa bits per channel under the pixel's shared exponent: every
    channel is within 1/128 of the pixel's largest channel (floor on write, +0.5 on read)."""
    peak = expected.max(axis=-1, keepdims=True)
    assert np.all(np.abs(actual - expected) <= peak / 128)


def decoded(rgbe: np.ndarray) -> np.ndarray:
    """Radiance's decoding of RGBE bytes: (m + 0.5) * 2^(e - 136), black where e == 0."""
    exponent = rgbe[..., 3:].astype(np.float64)
    values = (rgbe[..., :3] + 0.5) * 2.0 ** (exponent - 136)
    return np.where(exponent > 0, values, 0).astype(np.float32)


def random_rgbe(shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgbe = rng.integers(0, 256, shape + (4,), dtype=np.uint8)
    rgbe[..., 3] = rng.integers(120, 140, shape)
    return rgbe


class TestWriteHdr:
    def test_round_trip_within_rgbe_precision(self, tmp_path):
        rgb = hdr_pixels((9, 40, 3))
        write_hdr(tmp_path / "a.hdr", rgb)
        back = read_hdr(tmp_path / "a.hdr")
        assert back.shape == (9, 40, 3) and back.dtype == np.float32
        assert_rgbe_close(back, rgb)

    def test_black_and_negative_values_read_as_zero(self, tmp_path):
        rgb = np.zeros((2, 8, 3), np.float32)
        rgb[1, 3] = [-1.0, 2.0, 1e-40]
        write_hdr(tmp_path / "z.hdr", rgb)
        back = read_hdr(tmp_path / "z.hdr")
        np.testing.assert_array_equal(back[0], 0.0)
        assert back[1, 3, 0] < 2.0 / 128 and back[1, 3, 2] < 2.0 / 128
        assert back[1, 3, 1] == pytest.approx(2.0, rel=1 / 128)

    def test_writes_rle_with_the_standard_header(self, tmp_path):
        rgb = np.ones((4, 64, 3), np.float32)
        write_hdr(tmp_path / "c.hdr", rgb)
        data = (tmp_path / "c.hdr").read_bytes()
        resolution = b"-Y 4 +X 64\n"
        assert data.startswith(HEADER + resolution)
        assert data[len(HEADER + resolution) :][:4] == bytes((2, 2, 0, 64))
        assert len(data) < len(HEADER + resolution) + 4 * 64 * 4 // 4  # constant rows compress

    @pytest.mark.parametrize("width", [1, 7, 8, 300])
    def test_widths_outside_and_inside_the_rle_range(self, tmp_path, width):
        rgb = hdr_pixels((3, width, 3))
        rgb[:, width // 2 :] = rgb[0, 0]  # a long run to encode
        write_hdr(tmp_path / "w.hdr", rgb)
        assert_rgbe_close(read_hdr(tmp_path / "w.hdr"), rgb)

    def test_huge_values_are_clamped(self, tmp_path):
        rgb = np.full((1, 8, 3), np.finfo(np.float32).max, np.float32)
        write_hdr(tmp_path / "big.hdr", rgb)
        back = read_hdr(tmp_path / "big.hdr")
        assert np.isfinite(back).all() and back.min() > 1e38

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_non_finite_is_refused(self, tmp_path, bad):
        rgb = np.ones((2, 8, 3), np.float32)
        rgb[0, 0, 0] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            write_hdr(tmp_path / "bad.hdr", rgb)
        assert os.listdir(tmp_path) == []

    def test_wrong_shape_is_refused(self, tmp_path):
        with pytest.raises(ValueError, match="shape"):
            write_hdr(tmp_path / "bad.hdr", np.ones((2, 8), np.float32))

    def test_atomic(self, tmp_path):
        write_hdr(tmp_path / "a.hdr", hdr_pixels((2, 8, 3)))
        assert os.listdir(tmp_path) == ["a.hdr"]


class TestReadHdr:
    def test_flat_scanlines_written_by_hand(self, tmp_path):
        rgbe = random_rgbe((3, 10))
        rgbe[0, 0] = [128, 64, 0, 129]
        rgbe[1, 1] = [200, 10, 10, 0]  # exponent 0: black whatever the mantissas
        (tmp_path / "flat.hdr").write_bytes(HEADER + b"-Y 3 +X 10\n" + rgbe.tobytes())
        back = read_hdr(tmp_path / "flat.hdr")
        np.testing.assert_array_equal(back, decoded(rgbe))
        np.testing.assert_array_equal(back[0, 0], np.array([128.5, 64.5, 0.5]) / 128)
        np.testing.assert_array_equal(back[1, 1], 0.0)

    def test_rle_scanline_encoded_by_hand(self, tmp_path):
        # Width 10; per component: a run and/or literals, as the format describes.
        components = [
            bytes((128 + 10, 100)),  # R: ten times 100
            bytes((3, 1, 2, 3, 128 + 7, 50)),  # G: literal 1 2 3, then seven times 50
            bytes((10, *range(10))),  # B: literal 0..9
            bytes((128 + 4, 130, 128 + 6, 131)),  # E: four times 130, six times 131
        ]
        body = bytes((2, 2, 0, 10)) + b"".join(components)
        (tmp_path / "rle.hdr").write_bytes(HEADER + b"-Y 1 +X 10\n" + body)
        expected = np.zeros((1, 10, 4), np.uint8)
        expected[0, :, 0] = 100
        expected[0, :, 1] = [1, 2, 3] + [50] * 7
        expected[0, :, 2] = range(10)
        expected[0, :, 3] = [130] * 4 + [131] * 6
        np.testing.assert_array_equal(read_hdr(tmp_path / "rle.hdr"), decoded(expected))

    @pytest.mark.parametrize(
        ("resolution", "to_stored"),
        [
            (b"-Y 3 +X 10", lambda image: image),
            (b"+Y 3 +X 10", lambda image: image[::-1]),
            (b"-Y 3 -X 10", lambda image: image[:, ::-1]),
            (b"+Y 3 -X 10", lambda image: image[::-1, ::-1]),
            (b"+X 10 -Y 3", lambda image: image.swapaxes(0, 1)),
            (b"-X 10 +Y 3", lambda image: image[::-1, ::-1].swapaxes(0, 1)),
        ],
    )
    def test_orientations(self, tmp_path, resolution, to_stored):
        rgbe = random_rgbe((3, 10))
        stored = np.ascontiguousarray(to_stored(rgbe))
        (tmp_path / "o.hdr").write_bytes(HEADER + resolution + b"\n" + stored.tobytes())
        np.testing.assert_array_equal(read_hdr(tmp_path / "o.hdr"), decoded(rgbe))
        assert read_hdr_size(tmp_path / "o.hdr") == (10, 3)

    def test_header_variants(self, tmp_path):
        rgbe = random_rgbe((2, 3))
        header = b"#?RGBE\n# made by hand\nEXPOSURE=2.0\nGAMMA=1.0\n\n"
        (tmp_path / "v.pic").write_bytes(header + b"-Y 2 +X 3\n" + rgbe.tobytes())
        np.testing.assert_array_equal(read_hdr(tmp_path / "v.pic"), decoded(rgbe))

    def test_reads_a_real_panorama_fast(self, tmp_path, studiolights):
        rgb = np.maximum(read_exr(studiolights["sunset"])[0], 0)
        write_hdr(tmp_path / "sunset.hdr", rgb)
        start = time.perf_counter()
        back = read_hdr(tmp_path / "sunset.hdr")
        assert time.perf_counter() - start < 0.5
        assert back.shape == (512, 1024, 3)
        assert_rgbe_close(back, rgb)

    def test_size_from_header(self, tmp_path):
        write_hdr(tmp_path / "a.hdr", hdr_pixels((5, 12, 3)))
        assert read_hdr_size(tmp_path / "a.hdr") == (12, 5)


class TestBadHdr:
    def write(self, tmp_path: Path, data: bytes) -> Path:
        path = tmp_path / "bad.hdr"
        path.write_bytes(data)
        return path

    @pytest.mark.parametrize("keep", [0.95, 0.5, 0.02])
    def test_truncated(self, tmp_path, keep):
        write_hdr(tmp_path / "a.hdr", hdr_pixels((16, 64, 3)))
        data = (tmp_path / "a.hdr").read_bytes()
        path = self.write(tmp_path, data[: int(len(data) * keep)])
        with pytest.raises(BadInput, match="bad.hdr"):
            read_hdr(path)

    def test_truncated_flat(self, tmp_path):
        path = self.write(tmp_path, HEADER + b"-Y 2 +X 3\n" + bytes(20))
        with pytest.raises(BadInput, match="truncated at scanline 1"):
            read_hdr(path)

    def test_run_overflowing_the_scanline(self, tmp_path):
        body = bytes((2, 2, 0, 8, 128 + 9, 1)) + bytes((128 + 8, 1)) * 3
        path = self.write(tmp_path, HEADER + b"-Y 1 +X 8\n" + body)
        with pytest.raises(BadInput, match="corrupt or truncated"):
            read_hdr(path)

    def test_zero_count(self, tmp_path):
        body = bytes((2, 2, 0, 8, 0)) + bytes(40)
        with pytest.raises(BadInput, match="corrupt"):
            read_hdr(self.write(tmp_path, HEADER + b"-Y 1 +X 8\n" + body))

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"", "no '#\\?' signature"),
            (b"P6\n3 2\n255\n", "no '#\\?' signature"),
            (b"#?RADIANCE\nFORMAT=32-bit_rle_xyze\n\n-Y 1 +X 1\nAAAA", "pixel format 32-bit_rle_xyze"),
            (b"#?RADIANCE\n\n-Y 1 +Y 1\nAAAA", "resolution line"),
            (b"#?RADIANCE\n\n1 1\nAAAA", "resolution line"),
            (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n", "resolution line"),
            (b"#?RADIANCE\n" + b"X" * 70000 + b"\n", "too long"),
        ],
    )
    def test_bad_headers(self, tmp_path, data, message):
        path = self.write(tmp_path, data)
        with pytest.raises(BadInput, match=message):
            read_hdr(path)
        with pytest.raises(BadInput, match=message):
            read_hdr_size(path)

    def test_missing_file(self, tmp_path):
        with pytest.raises(BadInput, match="No such file"):
            read_hdr(tmp_path / "missing.hdr")
