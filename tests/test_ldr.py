"""Tests for lediff_backend.hdr.ldr: 8/16-bit PNG, JPEG and TIFF reading and writing."""

from __future__ import annotations

import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps

from lediff_backend.errors import BadInput
from lediff_backend.hdr.ldr import DEFAULT_MAX_PIXELS, read_ldr, write_jpeg, write_png

# JPEG is lossy: smooth 8-bit content comes back within a few codes.
JPEG_ATOL = 6 / 255


# --- files written by hand, independent of Pillow's encoders and of write_png -------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(codes: np.ndarray, colour_type: int, *, bit_depth: int = 16) -> bytes:
    """A PNG of HxWxC codes whose rows cycle through all five filter types (None, Sub, Up,
    Average, Paeth), so that decoding exercises every unfiltering rule."""
    height, width, channels = codes.shape
    rows = codes.astype(f">u{bit_depth // 8}").reshape(height, -1).view(np.uint8).astype(np.int32)
    bpp = channels * bit_depth // 8
    previous = np.zeros_like(rows[0])
    body = []
    for y, row in enumerate(rows):
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), previous[:-bpp]])
        estimate = left + previous - up_left
        pa, pb, pc = abs(estimate - left), abs(estimate - previous), abs(estimate - up_left)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, previous, up_left))
        predictors = [0, left, previous, (left + previous) // 2, paeth]
        body.append(bytes([y % 5]) + ((row - predictors[y % 5]) % 256).astype(np.uint8).tobytes())
        previous = row
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"".join(body)))
        + png_chunk(b"IEND", b"")
    )


def tiff16_bytes(codes: np.ndarray, byte_order: str, *, deflate: bool) -> bytes:
    """A one-strip 16-bit RGB TIFF; ``byte_order`` "<" (II) or ">" (MM)."""
    height, width, _ = codes.shape
    strip = codes.astype(f"{byte_order}u2").tobytes()
    if deflate:
        strip = zlib.compress(strip)
    bits_offset, strip_offset = 8, 16
    ifd_offset = strip_offset + len(strip) + len(strip) % 2
    tags = [  # (tag, type: 3 SHORT / 4 LONG, count, value or offset)
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, bits_offset),
        (259, 3, 1, 8 if deflate else 1),
        (262, 3, 1, 2),
        (273, 4, 1, strip_offset),
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, len(strip)),
        (284, 3, 1, 1),
    ]
    padding = b"\0" * (ifd_offset - strip_offset - len(strip))
    out = (b"II" if byte_order == "<" else b"MM") + struct.pack(byte_order + "HI", 42, ifd_offset)
    out += struct.pack(byte_order + "4H", 16, 16, 16, 0) + strip + padding
    out += struct.pack(byte_order + "H", len(tags))
    for tag, kind, count, value in tags:
        if kind == 3 and count == 1:  # a single SHORT sits in the first half of the 4-byte field
            field = struct.pack(byte_order + "HH", value, 0)
        else:  # a LONG, or the offset of the three BitsPerSample SHORTs
            field = struct.pack(byte_order + "I", value)
        out += struct.pack(byte_order + "HHI", tag, kind, count) + field
    return out + struct.pack(byte_order + "I", 0)


def codes16(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    codes = np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)
    codes[0, 0] = 0
    codes[-1, -1] = 65535
    return codes


def gradient(height: int = 32, width: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    channels = [x / (width - 1), y / (height - 1), (x + y) / (width + height - 2)]
    return np.stack(channels, axis=-1).astype(np.float32)


# --- tests -----------------------------------------------------------------------------------


class TestEightBit:
    def test_png_every_code_exact(self, tmp_path):
        codes = np.arange(256 * 3, dtype=np.uint16).reshape(16, 16, 3) % 256
        Image.fromarray(codes.astype(np.uint8)).save(tmp_path / "a.png")
        image = read_ldr(tmp_path / "a.png")
        assert (image.bit_depth, image.format, image.focal_length_35mm) == (8, "PNG", None)
        assert image.pixels.dtype == np.float32
        np.testing.assert_array_equal(image.pixels, codes.astype(np.float32) / 255)

    def test_write_png_round_trip_exact(self, tmp_path):
        values = np.arange(256, dtype=np.float32).repeat(3).reshape(16, 16, 3) / 255
        write_png(tmp_path / "w.png", values)
        assert os.listdir(tmp_path) == ["w.png"]
        np.testing.assert_array_equal(read_ldr(tmp_path / "w.png").pixels, values)
        with Image.open(tmp_path / "w.png") as check:  # Pillow agrees
            np.testing.assert_array_equal(np.asarray(check), np.round(values * 255))

    def test_write_png_clips(self, tmp_path):
        write_png(tmp_path / "c.png", np.array([[[-1.0, 0.5, 2.0]]], np.float32))
        expected = np.array([[[0, 128, 255]]], np.float32) / np.float32(255)
        np.testing.assert_array_equal(read_ldr(tmp_path / "c.png").pixels, expected)

    def test_jpeg(self, tmp_path):
        rgb = gradient()
        write_jpeg(tmp_path / "g.jpg", rgb, quality=95)
        image = read_ldr(tmp_path / "g.jpg")
        assert (image.bit_depth, image.format) == (8, "JPEG")
        np.testing.assert_allclose(image.pixels, rgb, atol=JPEG_ATOL)

    def test_grey(self, tmp_path):
        grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
        Image.fromarray(grey).save(tmp_path / "l.png")
        pixels = read_ldr(tmp_path / "l.png").pixels
        np.testing.assert_array_equal(pixels, np.repeat(grey[..., None], 3, axis=2) / np.float32(255))

    def test_grey_alpha(self, tmp_path):
        la = np.stack([np.full((3, 4), 77, np.uint8), np.zeros((3, 4), np.uint8)], axis=-1)
        Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
        np.testing.assert_array_equal(read_ldr(tmp_path / "la.png").pixels, np.float32(77) / 255)

    def test_rgba_alpha_dropped(self, tmp_path):
        rgba = np.random.default_rng(3).integers(0, 256, (4, 6, 4), dtype=np.uint8)
        rgba[..., 3] = 0  # fully transparent: colours are kept as they are, not composited
        Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
        np.testing.assert_array_equal(read_ldr(tmp_path / "a.png").pixels, rgba[..., :3] / np.float32(255))

    def test_palette_with_transparency(self, tmp_path):
        palette = Image.new("P", (4, 2))
        palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
        palette.putdata([0, 1, 2, 0, 1, 2, 2, 2])
        palette.info["transparency"] = bytes([0, 255, 128])
        palette.save(tmp_path / "p.png", transparency=bytes([0, 255, 128]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pixels = read_ldr(tmp_path / "p.png").pixels
        np.testing.assert_array_equal(pixels[0, 0], [1, 0, 0])
        np.testing.assert_array_equal(pixels[0, 1], [0, 1, 0])
        np.testing.assert_array_equal(pixels[1, 3], [0, 0, 1])

    @pytest.mark.parametrize("name", ["c.jpg", "c.tif"])
    def test_cmyk(self, tmp_path, name):
        cmyk = np.zeros((8, 8, 4), np.uint8)
        cmyk[:, :4, 0] = 255  # cyan on the left, white (no ink) on the right
        Image.fromarray(cmyk, mode="CMYK").save(tmp_path / name, quality=100)
        image = read_ldr(tmp_path / name)
        np.testing.assert_allclose(image.pixels[:, :2], np.broadcast_to([0, 1, 1], (8, 2, 3)), atol=JPEG_ATOL)
        np.testing.assert_allclose(image.pixels[:, 6:], 1.0, atol=JPEG_ATOL)


class TestSixteenBit:
    @pytest.mark.parametrize(("channels", "colour_type"), [(3, 2), (4, 6)])
    def test_png_rgb_and_rgba_exact(self, tmp_path, channels, colour_type):
        codes = codes16((9, 13, channels))
        (tmp_path / "a.png").write_bytes(png_bytes(codes, colour_type))
        image = read_ldr(tmp_path / "a.png")
        assert (image.bit_depth, image.format) == (16, "PNG")
        np.testing.assert_array_equal(image.pixels, codes[..., :3] / np.float32(65535))

    def test_png_grey_exact(self, tmp_path):
        codes = codes16((5, 7, 1))
        (tmp_path / "g.png").write_bytes(png_bytes(codes, 0))
        image = read_ldr(tmp_path / "g.png")
        assert image.bit_depth == 16
        np.testing.assert_array_equal(image.pixels, np.repeat(codes, 3, axis=2) / np.float32(65535))

    def test_png_grey_alpha_reads_at_eight_bits(self, tmp_path):
        codes = codes16((4, 6, 2))
        (tmp_path / "ga.png").write_bytes(png_bytes(codes, 4))
        image = read_ldr(tmp_path / "ga.png")
        assert image.bit_depth == 8
        np.testing.assert_array_equal(image.pixels[..., 0], (codes[..., 0] >> 8) / np.float32(255))

    def test_write_png_16_round_trip_exact(self, tmp_path):
        codes = codes16((6, 10, 3))
        values = codes / np.float32(65535)
        write_png(tmp_path / "w.png", values, bits=16)
        image = read_ldr(tmp_path / "w.png")
        assert image.bit_depth == 16
        np.testing.assert_array_equal(image.pixels, values)
        with Image.open(tmp_path / "w.png") as check:  # Pillow reads the high bytes
            np.testing.assert_array_equal(np.asarray(check), codes >> 8)

    @pytest.mark.parametrize("deflate", [False, True])  # deflate goes through libtiff
    @pytest.mark.parametrize("byte_order", ["<", ">"])
    def test_tiff_rgb_exact(self, tmp_path, byte_order, deflate):
        codes = codes16((7, 9, 3))
        (tmp_path / "a.tif").write_bytes(tiff16_bytes(codes, byte_order, deflate=deflate))
        image = read_ldr(tmp_path / "a.tif")
        assert (image.bit_depth, image.format) == (16, "TIFF")
        np.testing.assert_array_equal(image.pixels, codes / np.float32(65535))

    def test_write_png_bits_must_be_8_or_16(self, tmp_path):
        with pytest.raises(ValueError, match="bits"):
            write_png(tmp_path / "a.png", np.zeros((2, 2, 3), np.float32), bits=12)


class TestExif:
    @pytest.mark.parametrize("orientation", range(1, 9))
    def test_orientation_matches_pillow(self, tmp_path, orientation):
        codes = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3), dtype=np.uint8)
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        Image.fromarray(codes).save(tmp_path / "o.png", exif=exif)
        with Image.open(tmp_path / "o.png") as reference:
            expected = np.asarray(ImageOps.exif_transpose(reference))
        np.testing.assert_array_equal(read_ldr(tmp_path / "o.png").pixels, expected / np.float32(255))

    def test_jpeg_orientation_6_turns_clockwise(self, tmp_path):
        rgb = np.zeros((32, 64, 3), np.float32)
        rgb[:, 32:] = 1.0  # left half black, right half white
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = 6
        Image.fromarray((rgb * 255).astype(np.uint8)).save(tmp_path / "r.jpg", exif=exif)
        pixels = read_ldr(tmp_path / "r.jpg").pixels
        assert pixels.shape == (64, 32, 3)  # upright: the stored left edge is now the top
        assert pixels[:28].max() < 0.1 and pixels[36:].min() > 0.9

    def test_focal_length_35mm(self, tmp_path):
        exif = Image.Exif()
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = 28
        Image.new("RGB", (4, 4)).save(tmp_path / "f.jpg", exif=exif)
        assert read_ldr(tmp_path / "f.jpg").focal_length_35mm == 28.0

    def test_zero_focal_length_means_unknown(self, tmp_path):
        exif = Image.Exif()
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = 0
        Image.new("RGB", (4, 4)).save(tmp_path / "f.jpg", exif=exif)
        assert read_ldr(tmp_path / "f.jpg").focal_length_35mm is None


class TestRefusals:
    def png_claiming(self, tmp_path: Path, width: int, height: int) -> Path:
        """A PNG header claiming a huge image, with a few bytes of (zero) pixel data."""
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        path = tmp_path / "bomb.png"
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(bytes(1000)))
            + png_chunk(b"IEND", b"")
        )
        return path

    def test_bomb_over_pillows_limit(self, tmp_path):
        path = self.png_claiming(tmp_path, 100_000, 100_000)
        start = time.perf_counter()
        with pytest.raises(BadInput, match="bomb.png"):
            read_ldr(path)
        assert time.perf_counter() - start < 0.5

    def test_bomb_over_our_limit_only(self, tmp_path):
        # Between Pillow's warning and error sizes: our own check refuses, with no warning.
        path = self.png_claiming(tmp_path, 16384, 8193)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(BadInput, match=f"too large: 16384x8193 is more than {DEFAULT_MAX_PIXELS}"):
                read_ldr(path)
        assert time.perf_counter() - start < 0.5

    def test_small_max_pixels(self, tmp_path):
        Image.new("RGB", (2000, 1000)).save(tmp_path / "big.png")
        start = time.perf_counter()
        with pytest.raises(BadInput, match="too large: 2000x1000"):
            read_ldr(tmp_path / "big.png", max_pixels=1_000_000)
        assert time.perf_counter() - start < 0.5
        assert read_ldr(tmp_path / "big.png", max_pixels=2_000_000).pixels.shape == (1000, 2000, 3)

    @pytest.mark.parametrize("name", ["cut.png", "cut.jpg", "cut.tif"])
    def test_truncated(self, tmp_path, name):
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(BadInput, match=f"cannot read image .*{name}"):
            read_ldr(tmp_path / name)

    def test_truncated_16_bit_png(self, tmp_path):
        data = png_bytes(codes16((32, 32, 3)), 2)
        (tmp_path / "cut16.png").write_bytes(data[: len(data) // 2])
        with pytest.raises(BadInput, match="cut16.png"):
            read_ldr(tmp_path / "cut16.png")

    @pytest.mark.parametrize(
        ("content", "reason"),
        [(b"", "cannot identify"), (b"just some text\n", "cannot identify"), (b"\x89PNG\r\n\x1a\n", "")],
    )
    def test_not_an_image(self, tmp_path, content, reason):
        (tmp_path / "x.png").write_bytes(content)
        with pytest.raises(BadInput, match=f"cannot read image .*x.png: {reason}") as error:
            read_ldr(tmp_path / "x.png")
        assert "\n" not in str(error.value)

    def test_missing_file_and_folder(self, tmp_path):
        with pytest.raises(BadInput, match="No such file or directory"):
            read_ldr(tmp_path / "missing.png")
        with pytest.raises(BadInput, match="Is a directory"):
            read_ldr(tmp_path)

    def test_float_tiff(self, tmp_path):
        Image.fromarray(np.ones((2, 2), np.float32), mode="F").save(tmp_path / "f.tif")
        with pytest.raises(BadInput, match="EXR"):
            read_ldr(tmp_path / "f.tif")

    @pytest.mark.parametrize("writer", [write_png, write_jpeg])
    def test_writers_refuse_bad_pixels(self, tmp_path, writer):
        with pytest.raises(ValueError, match="shape"):
            writer(tmp_path / "a", np.zeros((2, 2), np.float32))
        with pytest.raises(ValueError, match="NaN"):
            writer(tmp_path / "a", np.full((2, 2, 3), np.nan, np.float32))
        assert os.listdir(tmp_path) == []
