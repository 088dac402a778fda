"""Tests for lediff_backend.hdr.imageio: dispatch by content, HDR checks, write by extension."""

from __future__ import annotations

import os
import time

import numpy as np
import OpenEXR
import pytest
from PIL import ExifTags
from PIL import Image as PILImage

from lediff_backend.errors import BadInput
from lediff_backend.hdr.color import linear_to_srgb
from lediff_backend.hdr.exr import read_exr, write_exr
from lediff_backend.hdr.imageio import HDR_EXTENSIONS, LDR_EXTENSIONS, Image, read_image, write_image
from lediff_backend.hdr.ldr import write_png
from lediff_backend.hdr.radiance import write_hdr



def hdr_pixels(shape: tuple[int, ...] = (4, 8, 3), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (2.0 ** rng.uniform(-6, 6, shape)).astype(np.float32)


def assert_rgbe_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """RGBE: 8-bit mantissas under a shared exponent, so within 1/128 of the pixel's peak."""
    assert np.all(np.abs(actual - expected) <= expected.max(axis=-1, keepdims=True) / 128)


def raw_exr(path, rgb: np.ndarray) -> None:
    """An EXR holding whatever ``rgb`` holds (write_exr refuses non-finite values)."""
    channels = {"RGB": np.ascontiguousarray(rgb)}
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION}, channels).write(str(path))


class TestReadImage:
    def test_exr(self, tmp_path):
        rgb = hdr_pixels()
        write_exr(tmp_path / "a.exr", rgb)
        image = read_image(tmp_path / "a.exr")
        assert image == Image(image.pixels, is_hdr=True, bit_depth=32, format="EXR", focal_length_35mm=None)
        np.testing.assert_array_equal(image.pixels, rgb)

    def test_half_exr_bit_depth(self, tmp_path):
        write_exr(tmp_path / "h.exr", hdr_pixels(), half=True)
        assert read_image(tmp_path / "h.exr").bit_depth == 16

    def test_radiance(self, tmp_path):
        rgb = hdr_pixels()
        write_hdr(tmp_path / "a.hdr", rgb)
        image = read_image(tmp_path / "a.hdr")
        assert (image.is_hdr, image.bit_depth, image.format) == (True, 32, "HDR")
        assert_rgbe_close(image.pixels, rgb)

    def test_ldr(self, tmp_path):
        codes = np.arange(24, dtype=np.uint8).reshape(2, 4, 3) * 10
        PILImage.fromarray(codes).save(tmp_path / "a.png")
        image = read_image(tmp_path / "a.png")
        assert (image.is_hdr, image.bit_depth, image.format) == (False, 8, "PNG")
        np.testing.assert_array_equal(image.pixels, codes / np.float32(255))

    def test_ldr_16_bit_with_focal_length(self, tmp_path):
        values = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 4, 3)
        write_png(tmp_path / "a.png", values, bits=16)
        image = read_image(tmp_path / "a.png")
        assert image.bit_depth == 16
        np.testing.assert_array_equal(image.pixels, np.round(values * 65535) / np.float32(65535))
        exif = PILImage.Exif()
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = 50
        PILImage.new("RGB", (4, 2)).save(tmp_path / "b.jpg", exif=exif)
        assert read_image(tmp_path / "b.jpg").focal_length_35mm == 50.0

    def test_dispatch_by_content_not_extension(self, tmp_path):
        rgb = hdr_pixels()
        write_exr(tmp_path / "exr.exr", rgb)
        write_hdr(tmp_path / "rgbe.hdr", rgb)
        PILImage.new("RGB", (3, 2), (255, 0, 0)).save(tmp_path / "png.png")
        os.rename(tmp_path / "exr.exr", tmp_path / "exr.png")
        os.rename(tmp_path / "rgbe.hdr", tmp_path / "rgbe.jpg")
        os.rename(tmp_path / "png.png", tmp_path / "png.exr")
        assert read_image(tmp_path / "exr.png").format == "EXR"
        assert read_image(tmp_path / "rgbe.jpg").format == "HDR"
        assert read_image(tmp_path / "png.exr").format == "PNG"

    def test_studio_lights(self, studiolights):
        for name, path in studiolights.items():
            image = read_image(path)
            assert image.is_hdr and image.pixels.shape == (512, 1024, 3), name
            assert image.pixels.min() >= 0.0, name  # DWAB's tiny negatives are clamped
            assert np.isfinite(image.pixels).all(), name

    def test_negatives_clamped(self, tmp_path):
        rgb = hdr_pixels()
        rgb[0, 0] = [-1e-4, 0.5, -3.0]
        write_exr(tmp_path / "n.exr", rgb)
        np.testing.assert_array_equal(read_image(tmp_path / "n.exr").pixels[0, 0], [0.0, 0.5, 0.0])

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_exr_is_bad_input(self, tmp_path, bad):
        rgb = hdr_pixels()
        rgb[0, 0, 0] = bad
        rgb[1, 2, :] = bad
        rgb[3, 7, 2] = bad
        raw_exr(tmp_path / "bad.exr", rgb)
        with pytest.raises(BadInput, match="3 pixels are NaN or infinite in .*bad.exr"):
            read_image(tmp_path / "bad.exr")
        assert not np.isfinite(read_exr(tmp_path / "bad.exr")[0]).all()  # read_exr passes it on


class TestRefusals:
    def test_missing_file(self, tmp_path):
        with pytest.raises(BadInput, match="input file not found: .*missing.png"):
            read_image(tmp_path / "missing.png")

    def test_folder(self, tmp_path):
        with pytest.raises(BadInput, match="input file not found: .*Is a directory"):
            read_image(tmp_path)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
    def test_unreadable(self, tmp_path):
        path = tmp_path / "secret.png"
        PILImage.new("RGB", (2, 2)).save(path)
        path.chmod(0)
        with pytest.raises(BadInput, match="input file not found: .*Permission denied"):
            read_image(path)

    @pytest.mark.parametrize("name", ["cut.exr", "cut.hdr", "cut.png"])
    def test_truncated(self, tmp_path, name):
        write_image(tmp_path / name, hdr_pixels((64, 64, 3)))
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(BadInput, match=name):
            read_image(tmp_path / name)

    @pytest.mark.parametrize("content", [b"", b"plain text, not an image\n"])
    def test_not_an_image(self, tmp_path, content):
        (tmp_path / "x.png").write_bytes(content)
        with pytest.raises(BadInput, match="x.png"):
            read_image(tmp_path / "x.png")

    @pytest.mark.parametrize("name", ["big.exr", "big.hdr", "big.png"])
    def test_too_many_pixels(self, tmp_path, name):
        write_image(tmp_path / name, np.zeros((100, 200, 3), np.float32))
        with pytest.raises(BadInput, match="too large: 200x100"):
            read_image(tmp_path / name, max_pixels=19_999)
        assert read_image(tmp_path / name, max_pixels=20_000).pixels.shape == (100, 200, 3)

    def test_hdr_bomb_refused_from_its_header(self, tmp_path):
        (tmp_path / "bomb.hdr").write_bytes(b"#?RADIANCE\n\n-Y 100000 +X 100000\n" + bytes(64))
        start = time.perf_counter()
        with pytest.raises(BadInput, match="too large: 100000x100000"):
            read_image(tmp_path / "bomb.hdr")
        assert time.perf_counter() - start < 0.5


class TestWriteImage:
    def test_exr_with_header_options(self, tmp_path):
        rgb = hdr_pixels()
        write_image(tmp_path / "a.EXR", rgb, latlong=True, metadata={"peak": 9.5})
        pixels, attributes = read_exr(tmp_path / "a.EXR")
        np.testing.assert_array_equal(pixels, rgb)
        assert attributes["peak"] == "9.5"
        header = OpenEXR.File(str(tmp_path / "a.EXR"), header_only=True).header()
        assert header["envmap"] == OpenEXR.ENVMAP_LATLONG

    def test_half_exr(self, tmp_path):
        write_image(tmp_path / "h.exr", hdr_pixels(), half=True)
        assert read_image(tmp_path / "h.exr").bit_depth == 16

    @pytest.mark.parametrize("suffix", [".hdr", ".pic"])
    def test_radiance(self, tmp_path, suffix):
        rgb = hdr_pixels()
        write_image(tmp_path / f"a{suffix}", rgb)
        assert_rgbe_close(read_image(tmp_path / f"a{suffix}").pixels, rgb)

    def test_png_is_clipped_and_srgb_encoded(self, tmp_path):
        rgb = np.array([[[0.0, 0.18, 1.0], [-1.0, 0.5, 40.0]]], np.float32)
        write_image(tmp_path / "a.png", rgb)
        image = read_image(tmp_path / "a.png")
        assert (image.is_hdr, image.bit_depth) == (False, 8)
        expected = np.round(linear_to_srgb(rgb) * 255) / np.float32(255)
        np.testing.assert_array_equal(image.pixels, expected.astype(np.float32))

    @pytest.mark.parametrize("name", ["a.jpg", "a.tiff", "noextension"])
    def test_unsupported_extension(self, tmp_path, name):
        with pytest.raises(BadInput, match=r"\.exr, \.hdr, \.pic, \.png"):
            write_image(tmp_path / name, hdr_pixels())
        assert os.listdir(tmp_path) == []

    def test_extension_lists(self):
        assert set(HDR_EXTENSIONS).isdisjoint(LDR_EXTENSIONS)
        assert all(ext.startswith(".") and ext == ext.lower() for ext in HDR_EXTENSIONS + LDR_EXTENSIONS)
