"""Ultra HDR gain-map JPEGs: an SDR JPEG every viewer shows, and a gain map HDR screens apply.

The file is the SDR image (the HDR exposed at ``ev``, clipped at white, sRGB) followed by a
second JPEG, the gain map: per channel, ``log2((HDR + k) / (SDR + k))`` with ``k = 1/1024``,
scaled from [GainMapMin, GainMapMax] to 8-bit codes. (The specifications' example offset,
1/64, is coarse in the shadows: an HDR reading the gain map back was up to 0.19 stops off on
the bpy HDRIs, 0.06 with 1/1024.) The SDR image's XMP names the gain map
in a Google container directory, its MPF segment gives the gain map's byte offset (so
multi-picture readers find it), and the gain map's XMP carries the ``hdrgm`` parameters.
An HDR screen with headroom ``H`` stops shows ``(SDR + k)·2^(gain·w) - k`` with
``w = clip(H / HDRCapacityMax, 0, 1)``; anything else shows the SDR image.

Functions
---------
- ``encode_gainmap_jpeg``: HxWx3 scene-linear HDR -> the bytes of an Ultra HDR JPEG.
- ``write_gainmap_jpeg``: the same, written atomically to a file.
- ``decode_gainmap_jpeg``: those bytes -> (SDR display values, HDR at a display weight);
  what an HDR viewer does, used to check files.

References: Google, "Ultra HDR Image Format v1.0" (developer.android.com/media/platform/
hdr-image-format); Adobe, "Gain Map Specification" (the ``hdrgm`` XMP namespace, v1.0);
CIPA DC-007 "Multi-Picture Format". The binary ISO 21496-1 metadata segment is not written:
readers of Ultra HDR v1 use the XMP.
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
from .tonemap import exposure_srgb

__all__ = ["OFFSET", "encode_gainmap_jpeg", "write_gainmap_jpeg", "decode_gainmap_jpeg"]

OFFSET = 1 / 1024  # k: keeps the ratio finite where the SDR image is black
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_MPF_HEADER = b"MPF\x00"
_HDRGM = "http://ns.adobe.com/hdr-gain-map/1.0/"
_ATTRS = ("GainMapMin", "GainMapMax", "Gamma", "OffsetSDR", "OffsetHDR", "HDRCapacityMin", "HDRCapacityMax")


def _jpeg(codes: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(codes).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("JPEG segment too long")
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


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


def _gain_map_xmp(values: dict[str, float]) -> bytes:
    attributes = " ".join(f'hdrgm:{name}="{values[name]:.6g}"' for name in _ATTRS)
    return _xmp(f'<rdf:Description rdf:about="" xmlns:hdrgm="{_HDRGM}" hdrgm:Version="1.0" {attributes} '
                'hdrgm:BaseRenditionIsHDR="False"/>')


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
    high = max(high, low + 1e-3)
    recovery = (log_gain - low) / (high - low)
    gain_jpeg = _jpeg(np.round(np.clip(recovery, 0, 1) * 255).astype(np.uint8), quality)
    values = {"GainMapMin": low, "GainMapMax": high, "Gamma": 1.0, "OffsetSDR": OFFSET, "OffsetHDR": OFFSET,
              "HDRCapacityMin": max(low, 0.0), "HDRCapacityMax": max(high, 1e-3)}
    gain_map = gain_jpeg[:2] + _gain_map_xmp(values) + gain_jpeg[2:]
    head = sdr_jpeg[:2] + _primary_xmp(len(gain_map))
    mpf_start = len(head) + 4 + len(_MPF_HEADER)  # the MPF byte-order mark
    primary_size = len(head) + len(_mpf(0, 0, 0)) + len(sdr_jpeg) - 2
    return head + _mpf(primary_size, len(gain_map), primary_size - mpf_start) + sdr_jpeg[2:] + gain_map


def write_gainmap_jpeg(path: str | os.PathLike, hdr: np.ndarray, *, ev: float = 0.0, quality: int = 95) -> None:
    """``encode_gainmap_jpeg`` written atomically to ``path``."""
    data = encode_gainmap_jpeg(hdr, ev=ev, quality=quality)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def _gain_map_start(data: bytes) -> int:
    """Byte offset of the second image named by the primary's MPF index (APP2 ``MPF``)."""
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF and data[position + 1] != 0xDA:
        marker, length = data[position + 1], struct.unpack(">H", data[position + 2 : position + 4])[0]
        payload = data[position + 4 : position + 2 + length]
        if marker == 0xE2 and payload.startswith(_MPF_HEADER):
            tiff = payload[len(_MPF_HEADER) :]
            order = ">" if tiff[:2] == b"MM" else "<"
            ifd = struct.unpack(order + "I", tiff[4:8])[0]
            for k in range(struct.unpack(order + "H", tiff[ifd : ifd + 2])[0]):
                tag, _, count, value = struct.unpack(order + "HHII", tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k])
                if tag == 0xB002 and count >= 32:
                    offset = struct.unpack(order + "I", tiff[value + 24 : value + 28])[0]
                    return position + 4 + len(_MPF_HEADER) + offset
        position += 2 + length
    raise ValueError("not a gain-map JPEG: no Multi-Picture Format index with a second image")


def decode_gainmap_jpeg(data: bytes, weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(SDR display values in [0, 1], HDR linear values at display ``weight``) of an Ultra HDR
    JPEG with an RGB or grey gain map; the gain map is found through the MPF index."""
    with Image.open(io.BytesIO(data)) as image:
        sdr = np.asarray(image.convert("RGB"), np.float32) / 255
    with Image.open(io.BytesIO(data[_gain_map_start(data) :])) as image:
        gain = np.asarray(image.convert("RGB").resize(sdr.shape[1::-1], Image.Resampling.BILINEAR), np.float32) / 255
        xmp = image.info.get("xmp", b"").decode()
    values = {name: float(re.search(rf'hdrgm:{name}="([^"]+)"', xmp).group(1)) for name in _ATTRS}
    log_gain = values["GainMapMin"] + (values["GainMapMax"] - values["GainMapMin"]) * gain ** (1 / values["Gamma"])
    hdr = (srgb_to_linear(sdr) + values["OffsetSDR"]) * np.exp2(log_gain * weight) - values["OffsetHDR"]
    return sdr, np.maximum(hdr, 0).astype(np.float32)
