"""ISO 21496-1 gain-map metadata: the binary block Ultra HDR v1.1 readers use (Chrome, Android 15+,
Apple, Adobe), in an APP2 segment whose payload starts with ``ISO_URN``.

The gain map image's segment carries the whole block; the primary image's carries only the two
version numbers (``ISO_VERSION_ONLY``), which tells readers that the file follows the standard.
Every number is a fraction; gains and headrooms are in stops (log2). Layout, big-endian::

    u16 minimum_version = 0        u16 writer_version = 0
    u8  flags: bit 7 is_multichannel, bit 6 use_base_colour_space, bits 5-0 reserved (0)
    u32 base_hdr_headroom numerator,      u32 denominator
    u32 alternate_hdr_headroom numerator, u32 denominator
    per channel (three when is_multichannel, else one for all):
        s32/u32 gain_map_min   s32/u32 gain_map_max   u32/u32 gamma
        s32/u32 base_offset    s32/u32 alternate_offset

so a one-channel block is 61 bytes and a three-channel one 141. The direction (SDR base to HDR
alternate) follows from alternate_hdr_headroom > base_hdr_headroom. Writers built on the draft
standard (libultrahdr before its pull request 467, i.e. most Android 15 phones) set bit 3 when all
denominators were equal and then wrote one common denominator followed by numerators only, and
set bit 2 for an HDR base; ``decode_iso_metadata`` reads that layout too (and refuses an HDR base).

Sources: libavif ``src/write.c`` ``avifWriteGainmapMetadata`` (clause C.2.2 of ISO 21496-1,
updated to the final layout in libavif commit 669bea7) and libultrahdr
``lib/src/gainmapmetadata.cpp`` with the byte vectors of its ``tests/gainmapmetadata_test.cpp``.
"""

from __future__ import annotations

import math
import numbers
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

__all__ = ["ISO_URN", "ISO_VERSION_ONLY", "GainMapMetadata", "to_fraction", "encode_iso_metadata",
           "decode_iso_metadata"]

ISO_URN = b"urn:iso:std:iso:ts:21496:-1\x00"
ISO_VERSION_ONLY = struct.pack(">HH", 0, 0)  # minimum_version, writer_version

_MULTICHANNEL, _BASE_COLOUR_SPACE, _LEGACY_COMMON_DENOMINATOR, _LEGACY_BACKWARD = 0x80, 0x40, 0x08, 0x04
# Per-channel fields in stream order, with whether the numerator is signed.
_CHANNEL_FIELDS = (("gain_map_min", True), ("gain_map_max", True), ("gamma", False), ("base_offset", True),
                   ("alternate_offset", True))

Channels = tuple[Fraction, Fraction, Fraction]


def to_fraction(value: float, *, signed: bool) -> Fraction:
    """The fraction nearest ``value`` whose numerator fits an int32 (``signed``) or a uint32 and
    whose denominator fits a uint32: about 1e-9 off for values of a few stops."""
    limit = 2**31 - 1 if signed else 2**32 - 1
    if not math.isfinite(value) or abs(value) >= limit or (value < 0 and not signed):
        raise ValueError(f"{value} does not fit an ISO 21496-1 {'signed' if signed else 'unsigned'} fraction")
    return Fraction(value).limit_denominator(min(2**32 - 1, int(limit // (abs(value) + 1))))


@dataclass(frozen=True)
class GainMapMetadata:
    """The numbers of an ISO 21496-1 block (the hdrgm XMP names in brackets).

    ``gain_map_min``/``gain_map_max`` (GainMapMin/Max): the log2 gains that gain-map codes 0 and 1
    stand for; ``gamma`` (Gamma): codes are ``((gain - min) / (max - min)) ** gamma``;
    ``base_offset``/``alternate_offset`` (OffsetSDR/OffsetHDR): ``k`` in
    ``alternate = (base + k_base) * 2**gain - k_alternate``; ``base_hdr_headroom``/
    ``alternate_hdr_headroom`` (HDRCapacityMin/Max): the display headrooms, in stops, at which
    the gain map starts to apply and applies in full.
    """

    gain_map_min: Channels
    gain_map_max: Channels
    gamma: Channels
    base_offset: Channels
    alternate_offset: Channels
    base_hdr_headroom: Fraction
    alternate_hdr_headroom: Fraction
    use_base_colour_space: bool = True

    def __post_init__(self):
        if any(g <= 0 for g in self.gamma) or any(a > b for a, b in zip(self.gain_map_min, self.gain_map_max)):
            raise ValueError("gain-map metadata needs gamma > 0 and gain_map_min <= gain_map_max")
        if not 0 <= self.base_hdr_headroom < self.alternate_hdr_headroom:
            raise ValueError("gain-map metadata needs 0 <= base_hdr_headroom < alternate_hdr_headroom "
                             "(an SDR base that the gain map brightens)")

    @classmethod
    def from_floats(cls, *, gain_map_min: float | Sequence[float], gain_map_max: float | Sequence[float],
                    gamma: float | Sequence[float], base_offset: float | Sequence[float],
                    alternate_offset: float | Sequence[float], base_hdr_headroom: float,
                    alternate_hdr_headroom: float, use_base_colour_space: bool = True) -> GainMapMetadata:
        """Metadata from floats; a per-channel field takes one value for all channels or three."""

        def channels(value: float | Sequence[float], signed: bool) -> Channels:
            values = [value] * 3 if isinstance(value, numbers.Real) else list(value)
            if len(values) != 3:
                raise ValueError("a per-channel gain-map field takes one value or three")
            return tuple(to_fraction(float(v), signed=signed) for v in values)

        per_channel = {"gain_map_min": gain_map_min, "gain_map_max": gain_map_max, "gamma": gamma,
                       "base_offset": base_offset, "alternate_offset": alternate_offset}
        return cls(**{name: channels(per_channel[name], signed) for name, signed in _CHANNEL_FIELDS},
                   base_hdr_headroom=to_fraction(base_hdr_headroom, signed=False),
                   alternate_hdr_headroom=to_fraction(alternate_hdr_headroom, signed=False),
                   use_base_colour_space=use_base_colour_space)

    @property
    def channel_count(self) -> int:
        """1 when every per-channel field is the same for R, G and B, else 3."""
        same = all(len(set(getattr(self, name))) == 1 for name, _ in _CHANNEL_FIELDS)
        return 1 if same else 3


def _pack(value: Fraction, signed: bool) -> bytes:
    try:
        return struct.pack(">iI" if signed else ">II", value.numerator, value.denominator)
    except struct.error as error:
        raise ValueError(f"{value} does not fit an ISO 21496-1 fraction") from error


def encode_iso_metadata(metadata: GainMapMetadata) -> bytes:
    """The full block (without ``ISO_URN``), every field as its own numerator and denominator."""
    channels = metadata.channel_count
    flags = (_MULTICHANNEL if channels == 3 else 0) | (_BASE_COLOUR_SPACE if metadata.use_base_colour_space else 0)
    block = [ISO_VERSION_ONLY, bytes([flags]), _pack(metadata.base_hdr_headroom, False),
             _pack(metadata.alternate_hdr_headroom, False)]
    for channel in range(channels):
        block += [_pack(getattr(metadata, name)[channel], signed) for name, signed in _CHANNEL_FIELDS]
    return b"".join(block)


class _Reader:
    """Big-endian numbers read one after another; ValueError when the block ends too soon."""

    def __init__(self, data: bytes):
        self.data, self.position = data, 0

    def take(self, fmt: str) -> int:
        try:
            (value,) = struct.unpack_from(">" + fmt, self.data, self.position)
        except struct.error as error:
            raise ValueError("ISO 21496-1 gain-map metadata is truncated") from error
        self.position += struct.calcsize(fmt)
        return value

    def fraction(self, signed: bool, common_denominator: int | None) -> Fraction:
        numerator = self.take("i" if signed else "I")
        denominator = self.take("I") if common_denominator is None else common_denominator
        if denominator == 0:
            raise ValueError("ISO 21496-1 gain-map metadata has a zero denominator")
        return Fraction(numerator, denominator)


def decode_iso_metadata(block: bytes) -> GainMapMetadata:
    """The numbers of a full block (without ``ISO_URN``), in the final or the draft layout."""
    reader = _Reader(block)
    minimum_version = reader.take("H")
    if minimum_version != 0:
        raise ValueError(f"ISO 21496-1 gain-map metadata of minimum version {minimum_version} is not supported")
    reader.take("H")  # writer_version: later versions may append fields, which this reader ignores
    flags = reader.take("B")
    if flags & _LEGACY_BACKWARD:
        raise ValueError("gain maps on an HDR base image (backward direction) are not supported")
    common = reader.take("I") if flags & _LEGACY_COMMON_DENOMINATOR else None
    base_headroom, alternate_headroom = reader.fraction(False, common), reader.fraction(False, common)
    channels = [[reader.fraction(signed, common) for _, signed in _CHANNEL_FIELDS]
                for _ in range(3 if flags & _MULTICHANNEL else 1)]
    channels *= 3 // len(channels)
    per_field = {name: tuple(channel[k] for channel in channels) for k, (name, _) in enumerate(_CHANNEL_FIELDS)}
    return GainMapMetadata(**per_field, base_hdr_headroom=base_headroom, alternate_hdr_headroom=alternate_headroom,
                           use_base_colour_space=bool(flags & _BASE_COLOUR_SPACE))
