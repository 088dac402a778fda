"""Ultra HDR gain-map JPEGs: an SDR JPEG every viewer shows, and a gain map HDR screens apply.

The file is the SDR image (the HDR exposed at ``ev``, clipped at white, sRGB) followed by a
second JPEG, the gain map: per channel, ``log2((HDR + k) / (SDR + k))`` with ``k = 1/1024``,
scaled from [GainMapMin, GainMapMax] to 8-bit codes. (The specifications' example offset,
1/64, is coarse in the shadows: an HDR reading the gain map back was up to 0.19 stops off on
the bpy HDRIs, 0.06 with 1/1024.) An HDR screen with headroom ``H`` stops shows
``(SDR + k)·2^(gain·w) - k`` with ``w = clip(H / HDRCapacityMax, 0, 1)``; anything else shows
the SDR image.

The metadata is written twice, as libultrahdr does with both of its writers on, so that every
generation of reader finds it (Ultra HDR v1.1):

- ISO 21496-1 (``gainmap_iso``): an APP2 block on the gain map, and on the primary image an
  APP2 with only the version, which is what Chrome, Android 15+ and Apple look for;
- the Adobe ``hdrgm`` XMP on the gain map, and on the primary the XMP naming the gain map in a
  Google container directory, which is what Ultra HDR v1.0 readers (Android 14) look for.

Both images keep their JFIF APP0 first after SOI (the JFIF rule); the new segments follow it.
The primary's MPF index (APP2 ``MPF``) gives the gain map's byte offset, so multi-picture
readers find it.

Functions
---------
- ``encode_gainmap_jpeg``: HxWx3 scene-linear HDR -> the bytes of an Ultra HDR JPEG.
- ``write_gainmap_jpeg``: the same, written atomically to a file.
- ``read_gainmap_metadata``: those bytes -> the gain map's ``GainMapMetadata`` (from the ISO
  block, else from the XMP).
- ``decode_gainmap_jpeg``: those bytes -> (SDR display values, HDR at a display weight);
  what an HDR viewer does, used to check files.
- ``app_segments``: the marker segments before the image data of a JPEG, to inspect files.

References: Google, "Ultra HDR Image Format v1.1" (developer.android.com/media/platform/
hdr-image-format); Adobe, "Gain Map Specification" (the ``hdrgm`` XMP namespace, v1.0);
ISO 21496-1 (see ``gainmap_iso``); CIPA DC-007 "Multi-Picture Format"; libultrahdr
``JpegR::appendGainMap`` for the segment layout.
"""

from __future__ import annotations

import io
import os
import re
import struct

import numpy as np
from PIL import Image

from .atomic import atomic_output
from .color import srgb_to_linear
from .gainmap_iso import ISO_URN, ISO_VERSION_ONLY, GainMapMetadata, decode_iso_metadata, encode_iso_metadata
from .tonemap import exposure_srgb

__all__ = ["OFFSET", "encode_gainmap_jpeg", "write_gainmap_jpeg", "read_gainmap_metadata", "decode_gainmap_jpeg",
           "app_segments"]

OFFSET = 1 / 1024  # k: keeps the ratio finite where the SDR image is black
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_MPF_HEADER = b"MPF\x00"
_HDRGM = "http://ns.adobe.com/hdr-gain-map/1.0/"
# hdrgm XMP attribute -> GainMapMetadata field
_XMP_FIELDS = {"GainMapMin": "gain_map_min", "GainMapMax": "gain_map_max", "Gamma": "gamma",
               "OffsetSDR": "base_offset", "OffsetHDR": "alternate_offset", "HDRCapacityMin": "base_hdr_headroom",
               "HDRCapacityMax": "alternate_hdr_headroom"}


def _jpeg(codes: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(codes).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("JPEG segment too long")
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def app_segments(data: bytes, start: int = 0) -> list[tuple[int, int, bytes]]:
    """(marker, byte offset of its 0xFF, payload) of each segment of the JPEG at ``start``,
    from after SOI up to the image data (SOS)."""
    segments, position = [], start + 2
    while position + 4 <= len(data) and data[position] == 0xFF and data[position + 1] != 0xDA:
        marker, length = data[position + 1], struct.unpack(">H", data[position + 2 : position + 4])[0]
        segments.append((marker, position, data[position + 4 : position + 2 + length]))
        position += 2 + length
    return segments


def _split_after_jfif(jpeg: bytes) -> tuple[bytes, bytes]:
    """(SOI and the JFIF APP0 if any, the rest): JFIF wants APP0 right after SOI, so our
    segments go after it."""
    end = 2
    if jpeg[2:4] == b"\xff\xe0":
        end += 2 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:end], jpeg[end:]


def _xmp(description: str) -> bytes:
    packet = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f"{description}</rdf:RDF></x:xmpmeta>"
    )
    return _segment(0xE1, _XMP_HEADER + packet.encode())


def _primary_xmp(gain_map_length: int) -> bytes:
    return _xmp(
        '<rdf:Description rdf:about="" xmlns:Container="http://ns.google.com/photos/1.0/container/" '
        f'xmlns:Item="http://ns.google.com/photos/1.0/container/item/" xmlns:hdrgm="{_HDRGM}" hdrgm:Version="1.0">'
        "<Container:Directory><rdf:Seq>"
        '<rdf:li rdf:parseType="Resource"><Container:Item Item:Semantic="Primary" Item:Mime="image/jpeg"/></rdf:li>'
        '<rdf:li rdf:parseType="Resource"><Container:Item Item:Semantic="GainMap" Item:Mime="image/jpeg" '
        f'Item:Length="{gain_map_length}"/></rdf:li>'
        "</rdf:Seq></Container:Directory></rdf:Description>"
    )


def _gain_map_xmp(metadata: GainMapMetadata) -> bytes:
    """The hdrgm attributes: one value per field, so only for metadata the same for R, G and B."""
    if metadata.channel_count != 1:
        raise ValueError("the hdrgm XMP written here holds one value per field, not one per channel")
    values = {name: getattr(metadata, field) for name, field in _XMP_FIELDS.items()}
    values = {name: value[0] if isinstance(value, tuple) else value for name, value in values.items()}
    attributes = " ".join(f'hdrgm:{name}="{float(value):.9g}"' for name, value in values.items())
    return _xmp(f'<rdf:Description rdf:about="" xmlns:hdrgm="{_HDRGM}" hdrgm:Version="1.0" {attributes} '
                'hdrgm:BaseRenditionIsHDR="False"/>')


def _iso(block: bytes) -> bytes:
    return _segment(0xE2, ISO_URN + block)


def _mpf(primary_size: int, gain_map_size: int, gain_map_offset: int) -> bytes:
    """APP2 Multi-Picture Format index: two JPEGs, offsets from the segment's byte-order mark."""
    entries_at = 8 + 2 + 3 * 12 + 4
    ifd = struct.pack(">2sHI", b"MM", 42, 8) + struct.pack(">H", 3)
    ifd += struct.pack(">HHI4s", 0xB000, 7, 4, b"0100")  # MPFVersion
    ifd += struct.pack(">HHII", 0xB001, 4, 1, 2)  # NumberOfImages
    ifd += struct.pack(">HHII", 0xB002, 7, 32, entries_at) + struct.pack(">I", 0)  # MPEntry, no next IFD
    ifd += struct.pack(">IIIHH", 0x030000, primary_size, 0, 0, 0)  # baseline primary image
    ifd += struct.pack(">IIIHH", 0, gain_map_size, gain_map_offset, 0, 0)
    return _segment(0xE2, _MPF_HEADER + ifd)


def encode_gainmap_jpeg(hdr: np.ndarray, *, ev: float = 0.0, quality: int = 95) -> bytes:
    """An Ultra HDR JPEG of scene-linear ``hdr`` (HxWx3): SDR base + RGB gain map + metadata.

    The SDR base is ``hdr`` exposed by ``ev`` stops, clipped and sRGB-encoded; the gain map
    restores ``hdr · 2**ev`` (so the SDR white is 1.0) up to its 8-bit and JPEG losses.
    """
    sdr_codes = np.round(exposure_srgb(hdr, ev) * 255).astype(np.uint8)
    sdr_jpeg = _jpeg(sdr_codes, quality)
    sdr = srgb_to_linear(np.asarray(Image.open(io.BytesIO(sdr_jpeg)).convert("RGB"), np.float32) / 255)
    target = np.maximum(np.nan_to_num(np.asarray(hdr, np.float32) * np.float32(2.0**ev)), 0)
    log_gain = np.log2((target + OFFSET) / (sdr + OFFSET))
    low, high = float(log_gain.min()), float(log_gain.max())
    metadata = GainMapMetadata.from_floats(
        gain_map_min=low, gain_map_max=max(high, low + 1e-3), gamma=1.0, base_offset=OFFSET, alternate_offset=OFFSET,
        base_hdr_headroom=0.0, alternate_hdr_headroom=max(high, 1e-3))
    # quantise against the stored fractions, which is what readers will use
    low, high = float(metadata.gain_map_min[0]), float(metadata.gain_map_max[0])
    recovery = np.clip((log_gain - low) / (high - low), 0, 1)
    gain_head, gain_rest = _split_after_jfif(_jpeg(np.round(recovery * 255).astype(np.uint8), quality))
    gain_map = gain_head + _gain_map_xmp(metadata) + _iso(encode_iso_metadata(metadata)) + gain_rest
    sdr_head, sdr_rest = _split_after_jfif(sdr_jpeg)
    head = sdr_head + _primary_xmp(len(gain_map)) + _iso(ISO_VERSION_ONLY)
    mpf_start = len(head) + 4 + len(_MPF_HEADER)  # the MPF byte-order mark
    primary_size = len(head) + len(_mpf(0, 0, 0)) + len(sdr_rest)
    return head + _mpf(primary_size, len(gain_map), primary_size - mpf_start) + sdr_rest + gain_map


def write_gainmap_jpeg(path: str | os.PathLike, hdr: np.ndarray, *, ev: float = 0.0, quality: int = 95) -> None:
    """``encode_gainmap_jpeg`` written atomically to ``path``."""
    data = encode_gainmap_jpeg(hdr, ev=ev, quality=quality)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def _gain_map_start(data: bytes) -> int:
    """Byte offset of the second image named by the primary's MPF index (APP2 ``MPF``)."""
    for marker, position, payload in app_segments(data):
        if marker == 0xE2 and payload.startswith(_MPF_HEADER):
            tiff = payload[len(_MPF_HEADER) :]
            order = ">" if tiff[:2] == b"MM" else "<"
            ifd = struct.unpack(order + "I", tiff[4:8])[0]
            for k in range(struct.unpack(order + "H", tiff[ifd : ifd + 2])[0]):
                tag, _, count, value = struct.unpack(order + "HHII", tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k])
                if tag == 0xB002 and count >= 32:
                    offset = struct.unpack(order + "I", tiff[value + 24 : value + 28])[0]
                    return position + 4 + len(_MPF_HEADER) + offset
    raise ValueError("not a gain-map JPEG: no Multi-Picture Format index with a second image")


def _xmp_metadata(xmp: str) -> GainMapMetadata:
    values = {}
    for name, field in _XMP_FIELDS.items():
        found = re.search(rf'hdrgm:{name}="([^"]+)"', xmp)
        if found is None:
            raise ValueError(f"gain-map XMP without hdrgm:{name}")
        values[field] = float(found.group(1))
    return GainMapMetadata.from_floats(**values)


def _gain_map_metadata(data: bytes, start: int) -> GainMapMetadata:
    """The metadata of the gain map JPEG at ``start``: its ISO 21496-1 block, else its hdrgm XMP."""
    segments = app_segments(data, start)
    for marker, _, payload in segments:
        if marker == 0xE2 and payload.startswith(ISO_URN) and len(payload) > len(ISO_URN) + len(ISO_VERSION_ONLY):
            return decode_iso_metadata(payload[len(ISO_URN) :])
    for marker, _, payload in segments:
        if marker == 0xE1 and payload.startswith(_XMP_HEADER) and _HDRGM.encode() in payload:
            return _xmp_metadata(payload[len(_XMP_HEADER) :].decode())
    raise ValueError("gain map without ISO 21496-1 or hdrgm XMP metadata")


def read_gainmap_metadata(data: bytes) -> GainMapMetadata:
    """The gain-map metadata of an Ultra HDR JPEG (ISO 21496-1 block first, as libultrahdr reads)."""
    return _gain_map_metadata(data, _gain_map_start(data))


def decode_gainmap_jpeg(data: bytes, weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(SDR display values in [0, 1], HDR linear values at display ``weight``) of an Ultra HDR
    JPEG with an RGB or grey gain map; the gain map is found through the MPF index."""
    start = _gain_map_start(data)
    metadata = _gain_map_metadata(data, start)
    with Image.open(io.BytesIO(data)) as image:
        sdr = np.asarray(image.convert("RGB"), np.float32) / 255
    with Image.open(io.BytesIO(data[start:])) as image:
        gain = np.asarray(image.convert("RGB").resize(sdr.shape[1::-1], Image.Resampling.BILINEAR), np.float32) / 255
    low, high, gamma, base_offset, alternate_offset = (
        np.array([float(v) for v in getattr(metadata, field)], np.float32)
        for field in ("gain_map_min", "gain_map_max", "gamma", "base_offset", "alternate_offset"))
    log_gain = low + (high - low) * gain ** (1 / gamma)
    hdr = (srgb_to_linear(sdr) + base_offset) * np.exp2(log_gain * weight) - alternate_offset
    return sdr, np.maximum(hdr, 0).astype(np.float32)
