"""Radiance RGBE (``.hdr``, ``.pic``) input and output.

Functions
---------
- ``read_hdr``: HxWx3 float32 scene-linear pixels from flat or run-length encoded scanlines.
- ``read_hdr_size``: width and height from the header alone.
- ``write_hdr``: run-length encoded RGBE (flat scanlines where the width rules RLE out).

A pixel is three 8-bit mantissas sharing one exponent byte ``e``: a channel byte ``m`` decodes
to ``(m + 0.5)·2^(e − 136)`` as in Radiance's ``colr_color``, so values keep about 1% of the
pixel's largest channel. Every resolution line orientation (``-Y H +X W`` is the usual one) is
read into row 0 at the top; ``EXPOSURE`` lines are ignored, like most readers do; old-style
(pre-1991) run lengths and XYZE files are not supported.

References
----------
- G. Ward, "Real Pixels", Graphics Gems II (1991).
- Radiance file formats: https://radsite.lbl.gov/radiance/refer/filefmts.pdf
"""

from __future__ import annotations

import os
import re
from typing import BinaryIO, NamedTuple

import numpy as np

from ..errors import BadInput
from .atomic import atomic_output

__all__ = ["read_hdr", "read_hdr_size", "write_hdr"]

_MAX_HEADER_BYTES = 1 << 16
_RLE_WIDTHS = range(8, 0x8000)  # scanline lengths that new-style RLE can encode
_MIN_RUN = 4  # shorter repeats are cheaper as literals
_RGBE_MAX = float(np.ldexp(255 / 256, 127))  # the largest value with an exponent byte <= 255
_RESOLUTION = re.compile(rb"([-+])([XY]) (\d+) ([-+])([XY]) (\d+)")


class _Layout(NamedTuple):
    """How scanlines map to the image: ``scanlines`` of ``length`` pixels each."""

    scanlines: int
    length: int
    by_column: bool  # scanlines are image columns (the X axis comes first)
    flip_rows: bool  # +Y: the first row stored is the bottom one
    flip_columns: bool  # -X: pixels run right to left

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image."""
        return (self.scanlines, self.length) if self.by_column else (self.length, self.scanlines)


def read_hdr(path: str | os.PathLike) -> np.ndarray:
    """Read a Radiance RGBE file as HxWx3 float32 scene-linear pixels, row 0 at the top.

    Raises
    ------
    BadInput
        Not a Radiance file, an unsupported format, or truncated/corrupt pixel data.
    """
    with _open(path) as file:
        layout = _read_header(file, path)
        data = file.read()
    rgbe = _decode_scanlines(data, layout, path)
    if layout.by_column:
        rgbe = rgbe.swapaxes(0, 1)
    if layout.flip_rows:
        rgbe = rgbe[::-1]
    if layout.flip_columns:
        rgbe = rgbe[:, ::-1]
    return _rgbe_to_float(rgbe)


def read_hdr_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of a Radiance file from its header; no pixels are read."""
    with _open(path) as file:
        return _read_header(file, path).size


def write_hdr(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write HxWx3 finite scene-linear pixels as a ``-Y H +X W`` RLE RGBE file, atomically.

    Negative values are stored as 0 (RGBE has no sign); values above ~1.7e38 are clamped.

    Raises
    ------
    ValueError
        Wrong shape, or NaN or infinite values.
    """
    pixels = np.asarray(rgb, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected HxWx3 pixels, got shape {pixels.shape}")
    if not np.isfinite(pixels).all():
        raise ValueError("pixels contain NaN or infinite values")
    height, width = pixels.shape[:2]
    rgbe = _float_to_rgbe(pixels)
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n".encode("ascii")
    encode = _encode_rle_scanline if width in _RLE_WIDTHS else np.ndarray.tobytes
    with atomic_output(path) as tmp:
        tmp.write_bytes(header + b"".join(encode(line) for line in rgbe))


def _open(path: str | os.PathLike) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as error:
        raise BadInput(f"cannot open Radiance HDR file {path}: {error.strerror}") from error


def _read_header(file: BinaryIO, path: str | os.PathLike) -> _Layout:
    """Parse the header up to and including the resolution line."""
    if not file.readline(_MAX_HEADER_BYTES).startswith(b"#?"):
        raise BadInput(f"not a Radiance HDR file (no '#?' signature): {path}")
    while line := file.readline(_MAX_HEADER_BYTES).strip():
        if line.startswith(b"FORMAT=") and line != b"FORMAT=32-bit_rle_rgbe":
            raise BadInput(f"unsupported Radiance pixel format {line[7:].decode(errors='replace')}: {path}")
        if file.tell() >= _MAX_HEADER_BYTES:
            raise BadInput(f"Radiance HDR header is too long: {path}")
    match = _RESOLUTION.fullmatch(file.readline(256).strip())
    if match is None or match[2] == match[5]:
        raise BadInput(f"Radiance HDR file has no valid resolution line: {path}")
    first_sign, first_axis, scanlines, second_sign, _, length = match.groups()
    signs = {first_axis: first_sign, b"XY".replace(first_axis, b""): second_sign}
    return _Layout(
        scanlines=int(scanlines),
        length=int(length),
        by_column=first_axis == b"X",
        flip_rows=signs[b"Y"] == b"+",
        flip_columns=signs[b"X"] == b"-",
    )


def _decode_scanlines(data: bytes, layout: _Layout, path: str | os.PathLike) -> np.ndarray:
    """(scanlines, length, 4) uint8 RGBE; each scanline is RLE or flat, as its first bytes say."""
    length = layout.length
    rle_marker = _rle_marker(length) if length in _RLE_WIDTHS else None
    rgbe = np.empty((layout.scanlines, length, 4), dtype=np.uint8)
    pos = 0
    for row in range(layout.scanlines):
        if rle_marker is not None and data[pos : pos + 4] == rle_marker:
            rgbe[row], pos = _decode_rle_scanline(data, pos + 4, length, path)
        elif pos + 4 * length <= len(data):
            rgbe[row] = np.frombuffer(data, np.uint8, 4 * length, pos).reshape(length, 4)
            pos += 4 * length
        else:
            raise BadInput(f"Radiance HDR file is truncated at scanline {row}: {path}")
    return rgbe


def _decode_rle_scanline(
    data: bytes, pos: int, length: int, path: str | os.PathLike
) -> tuple[np.ndarray, int]:
    """One new-style RLE scanline starting after its 4-byte marker: (length x 4 RGBE, next pos).

    The four components follow each other; a count byte ``c > 128`` repeats the next byte
    ``c − 128`` times, ``0 < c <= 128`` copies the next ``c`` bytes.
    """
    planes = bytearray(4 * length)
    end = len(data)
    for start in range(0, 4 * length, length):
        out, stop = start, start + length
        while out < stop:
            count = data[pos] if pos < end else 0
            if count > 128:
                count -= 128
                chunk = data[pos + 1 : pos + 2] * count
                pos += 2
            else:
                chunk = data[pos + 1 : pos + 1 + count]
                pos += 1 + count
            if not chunk or len(chunk) != count or out + count > stop:
                raise BadInput(f"Radiance HDR file is corrupt or truncated: {path}")
            planes[out : out + count] = chunk
            out += count
    return np.frombuffer(planes, np.uint8).reshape(4, length).T, pos


def _encode_rle_scanline(rgbe: np.ndarray) -> bytes:
    """One scanline (length x 4 uint8) as new-style RLE: marker, then each component."""
    return _rle_marker(rgbe.shape[0]) + b"".join(_encode_rle_component(values) for values in rgbe.T)


def _rle_marker(length: int) -> bytes:
    """The four bytes that open a new-style RLE scanline of ``length`` pixels."""
    return bytes((2, 2, length >> 8, length & 0xFF))


def _encode_rle_component(values: np.ndarray) -> bytes:
    """Runs of at least ``_MIN_RUN`` equal bytes as (128 + n, byte); the rest as literals."""
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [values.size]))
    long_runs = ends - starts >= _MIN_RUN
    out = bytearray()
    literal_start = 0
    for start, end in zip(starts[long_runs].tolist(), ends[long_runs].tolist()):
        _append_literals(out, values[literal_start:start])
        for run_start in range(start, end, 127):
            out += bytes((128 + min(127, end - run_start), values[start]))
        literal_start = end
    _append_literals(out, values[literal_start:])
    return bytes(out)


def _append_literals(out: bytearray, values: np.ndarray) -> None:
    for start in range(0, values.size, 128):
        chunk = values[start : start + 128]
        out.append(chunk.size)
        out += chunk.tobytes()


def _rgbe_to_float(rgbe: np.ndarray) -> np.ndarray:
    exponent = rgbe[..., 3].astype(np.int32)
    scale = np.where(exponent > 0, np.ldexp(np.float32(1), exponent - 136), np.float32(0))
    return ((rgbe[..., :3] + np.float32(0.5)) * scale[..., None]).astype(np.float32)


def _float_to_rgbe(pixels: np.ndarray) -> np.ndarray:
    """HxWx3 float -> HxWx4 uint8: mantissas ``floor(c·2^(8−e))`` with ``max(c) = m·2^e``."""
    clipped = np.clip(pixels, 0.0, _RGBE_MAX).astype(np.float64)
    peak = clipped.max(axis=-1)
    _, exponent = np.frexp(peak)
    stored = peak > 1e-32  # darker pixels are black, as in Radiance's setcolr
    exponent = np.where(stored, exponent, 0)
    mantissas = np.floor(np.ldexp(clipped, (8 - exponent)[..., None]))
    rgbe = np.zeros(pixels.shape[:2] + (4,), dtype=np.uint8)
    rgbe[..., :3] = np.where(stored[..., None], np.clip(mantissas, 0, 255), 0)
    rgbe[..., 3] = np.where(stored, exponent + 128, 0)
    return rgbe
