"""8- and 16-bit display-encoded images (PNG, JPEG, TIFF) through Pillow.

Functions
---------
- ``read_ldr``: HxWx3 float32 in [0, 1], still display-encoded (not linearised), with its
  bit depth, format and EXIF 35 mm focal length; EXIF orientation applied, alpha dropped.
- ``check_pixel_count``: the decompression-bomb guard, applied before any pixel is decoded.
- ``write_png``: 8- or 16-bit RGB PNG, atomically.
- ``write_jpeg``: 8-bit RGB JPEG, atomically.

Pillow has no 16-bit RGB mode: it reduces 16-bit RGB(A) PNGs and TIFFs to 8 bits by keeping
each sample's high byte. ``read_ldr`` decodes such files twice, the second time with the
opposite byte order, which yields the low bytes, and joins the two. 16-bit grey comes as
Pillow's ``I;16`` directly; 16-bit grey+alpha PNGs are read at 8 bits.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import ExifTags, Image, ImageFile

from ..errors import BadInput
from .atomic import atomic_output

__all__ = ["DEFAULT_MAX_PIXELS", "LdrImage", "check_pixel_count", "read_ldr", "write_png", "write_jpeg"]

DEFAULT_MAX_PIXELS = 16384 * 8192
"""The largest image read by default: a 16K equirectangular panorama."""

# Pillow rawmodes that keep only the high byte of 16-bit samples -> the rawmode that keeps
# the low byte instead (the same layout read with the opposite byte order).
_OPPOSITE_ORDER = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}
_LOW_BYTE_RAWMODES = {
    f"{layout};16{order}": f"{layout};16{opposite}"
    for layout in ("RGB", "RGBA", "RGBX")
    for order, opposite in _OPPOSITE_ORDER.items()
}

# EXIF orientation -> the numpy operation that shows the image upright (as ImageOps.exif_transpose).
_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class LdrImage:
    """A decoded LDR image.

    ``pixels`` is HxWx3 float32 in [0, 1], display-encoded (sRGB or whatever the camera
    wrote), row 0 at the top; ``bit_depth`` 8 or 16; ``format`` Pillow's name ("PNG",
    "JPEG", "TIFF"); ``focal_length_35mm`` from EXIF FocalLengthIn35mmFilm, in mm.
    """

    pixels: np.ndarray
    bit_depth: int
    format: str
    focal_length_35mm: float | None


def check_pixel_count(width: int, height: int, max_pixels: int, path: str | os.PathLike) -> None:
    """BadInput when ``width * height`` exceeds ``max_pixels`` (call before decoding)."""
    if width * height > max_pixels:
        raise BadInput(
            f"image is too large: {width}x{height} is more than {max_pixels} pixels: {path}"
        )


def read_ldr(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LdrImage:
    """Read a PNG, JPEG or TIFF (any Pillow format) as display-encoded RGB in [0, 1].

    Grey becomes RGB, alpha is dropped, palette and CMYK images are converted to RGB and
    the EXIF orientation is applied.

    Raises
    ------
    BadInput
        Missing, empty, truncated or corrupt file, not an image, or more than
        ``max_pixels`` pixels (refused before decoding).
    """
    with _pillow_errors(path), _open(path, max_pixels) as image:
        codes, bit_depth = _decode(image, path, max_pixels)
        exif = image.getexif()
        upright = _ORIENTATIONS.get(exif.get(ExifTags.Base.Orientation), np.asarray)(codes)
        focal_length = _focal_length_35mm(exif)
        image_format = image.format
    pixels = np.ascontiguousarray(upright, dtype=np.float32) / np.float32(2**bit_depth - 1)
    return LdrImage(pixels, bit_depth, image_format, focal_length)


def write_png(path: str | os.PathLike, rgb: np.ndarray, *, bits: int = 8) -> None:
    """Write HxWx3 display-encoded values (clipped to [0, 1]) as an 8- or 16-bit RGB PNG."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    png = _encode_png(_quantise(rgb, bits))
    with atomic_output(path) as tmp:
        tmp.write_bytes(png)


def write_jpeg(path: str | os.PathLike, rgb: np.ndarray, *, quality: int = 90) -> None:
    """Write HxWx3 display-encoded values (clipped to [0, 1]) as an 8-bit JPEG."""
    codes = _quantise(rgb, 8)
    with atomic_output(path) as tmp:
        Image.fromarray(codes).save(tmp, format="JPEG", quality=quality)


@contextlib.contextmanager
def _pillow_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn whatever Pillow raises on a malformed file into a one-line BadInput."""
    try:
        yield
    except BadInput:
        raise
    except Exception as error:  # Pillow's decoders raise many types on malformed data
        reason = getattr(error, "strerror", None) or str(error).strip() or type(error).__name__
        reason = reason.splitlines()[0]
        raise BadInput(f"cannot read image {path}: {reason}") from error


@contextlib.contextmanager
def _open(path: str | os.PathLike, max_pixels: int) -> Iterator[Image.Image]:
    """Open lazily (header only) and refuse more than ``max_pixels`` before decoding.

    Pillow's own DecompressionBombWarning is silenced: ``max_pixels`` is the limit here.
    Its DecompressionBombError (over twice its limit) still raises, and becomes BadInput.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    with image:
        check_pixel_count(image.width, image.height, max_pixels, path)
        yield image


def _decode(image: Image.Image, path: str | os.PathLike, max_pixels: int) -> tuple[np.ndarray, int]:
    """HxWx3 unsigned integer codes and their bit depth."""
    if image.mode == "F":
        raise BadInput(f"32-bit float images are HDR data; save them as EXR: {path}")
    if image.mode == "I" or image.mode.startswith("I;16"):
        grey = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        return np.repeat(grey[..., None], 3, axis=2), 16
    if image.tile and all(_rawmode(tile) in _LOW_BYTE_RAWMODES for tile in image.tile):
        with _open(path, max_pixels) as low:
            low.tile = [_low_byte_tile(tile) for tile in low.tile]
            low_bytes = np.asarray(low)[..., :3]
        high_bytes = np.asarray(image)[..., :3]
        return (high_bytes.astype(np.uint16) << 8) | low_bytes, 16
    # Via RGBA: converting a palette with transparency straight to RGB makes Pillow warn.
    return np.asarray(image.convert("RGBA"))[..., :3], 8


def _rawmode(tile: ImageFile._Tile) -> str:
    return tile.args if isinstance(tile.args, str) else tile.args[0]


def _low_byte_tile(tile: ImageFile._Tile) -> ImageFile._Tile:
    """The same tile decoded with the rawmode that yields the low byte of each sample."""
    low = _LOW_BYTE_RAWMODES[_rawmode(tile)]
    return tile._replace(args=low if isinstance(tile.args, str) else (low, *tile.args[1:]))


def _focal_length_35mm(exif: Image.Exif) -> float | None:
    value = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.FocalLengthIn35mmFilm)
    return float(value) if value else None


def _quantise(rgb: np.ndarray, bits: int) -> np.ndarray:
    """HxWx3 values in [0, 1] -> unsigned integer codes of ``bits`` bits."""
    pixels = np.asarray(rgb, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected HxWx3 pixels, got shape {pixels.shape}")
    if not np.isfinite(pixels).all():
        raise ValueError("pixels contain NaN or infinite values")
    top = 2**bits - 1
    return np.round(np.clip(pixels, 0.0, 1.0) * top).astype(np.uint8 if bits == 8 else np.uint16)


def _encode_png(codes: np.ndarray) -> bytes:
    """RGB PNG of 8- or 16-bit codes, sRGB-tagged, every row with the "Up" filter."""
    height, width, _ = codes.shape
    bits = codes.dtype.itemsize * 8
    rows = codes.astype(f">u{codes.dtype.itemsize}").reshape(height, -1).view(np.uint8)
    filtered = np.diff(rows, axis=0, prepend=np.zeros((1, rows.shape[1]), np.uint8))  # wraps mod 256
    scanlines = np.concatenate([np.full((height, 1), 2, np.uint8), filtered], axis=1)
    return b"".join(
        [
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, 2, 0, 0, 0)),
            _png_chunk(b"sRGB", b"\x00"),
            _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)),
            _png_chunk(b"IEND", b""),
        ]
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
