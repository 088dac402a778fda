"""Ultra HDR gain-map JPEGs (``hdr/gainmap.py``), their ISO 21496-1 metadata block
(``hdr/gainmap_iso.py``) and ``--gainmap`` on ``lediff convert``."""

from __future__ import annotations

import io
import re
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin, MpoImagePlugin

from lediff_backend.hdr.color import luminance, srgb_to_linear
from lediff_backend.hdr.exposure import simulate_ldr
from lediff_backend.hdr.exr import read_exr
from lediff_backend.hdr.gainmap import (_gain_map_start, app_segments, decode_gainmap_jpeg, encode_gainmap_jpeg,
                                        read_gainmap_metadata)
from lediff_backend.hdr.gainmap_iso import (ISO_URN, GainMapMetadata, decode_iso_metadata, encode_iso_metadata,
                                            to_fraction)
from lediff_backend.hdr.imageio import read_image
from lediff_backend.hdr.ldr import write_png
from lediff_backend.hdr.metrics import log_luminance_rmse
from lediff_backend.sample_data import STUDIOLIGHT_NAMES
from tests.test_merge import LEDIFF

ROUND_TRIP_RMSE_MAX = 0.07  # stops: 8-bit gain codes and JPEG losses of both images


@pytest.fixture(scope="module", params=STUDIOLIGHT_NAMES)
def encoded(request, studiolights):
    hdr = read_image(studiolights[request.param]).pixels
    return hdr, encode_gainmap_jpeg(hdr)


def test_round_trip_on_real_hdris(encoded):
    hdr, data = encoded
    sdr, restored = decode_gainmap_jpeg(data)
    assert log_luminance_rmse(restored, hdr) <= ROUND_TRIP_RMSE_MAX
    assert abs(np.log2(restored.max() / hdr.max())) < 0.25  # the peak survives, softened by the JPEG
    assert luminance(restored).mean() == pytest.approx(luminance(hdr).mean(), rel=0.04)  # so does the light
    np.testing.assert_allclose(decode_gainmap_jpeg(data, weight=0.0)[1], srgb_to_linear(sdr), atol=1e-6)


def _segment_kinds(data: bytes, start: int = 0) -> list[str]:
    """The segments of the JPEG at ``start`` up to its image data: JFIF, XMP, ISO (21496-1), MPF,
    or the marker in hex."""
    kinds = {(0xE0, b"JFIF\x00"): "JFIF", (0xE1, b"http://ns.adobe.com/xap/1.0/\x00"): "XMP", (0xE2, ISO_URN): "ISO",
             (0xE2, b"MPF\x00"): "MPF"}
    return [next((kind for (m, head), kind in kinds.items() if m == marker and payload.startswith(head)),
                 f"{marker:02X}") for marker, _, payload in app_segments(data, start)]


def _payload(data: bytes, start: int, kind: str) -> bytes:
    (payload,) = [p for (_, _, p), k in zip(app_segments(data, start), _segment_kinds(data, start)) if k == kind]
    return payload


def test_layout(encoded):
    """Primary: SOI, JFIF, container XMP, version-only ISO block, MPF index, then the SDR image data;
    gain map: SOI, JFIF, hdrgm XMP, full ISO block, its image data, to the end of the file."""
    hdr, data = encoded
    start = _gain_map_start(data)
    assert data[start - 2 : start] == b"\xff\xd9" and data[start : start + 2] == b"\xff\xd8"
    primary, gain_map = _segment_kinds(data), _segment_kinds(data, start)
    assert primary[:4] == ["JFIF", "XMP", "ISO", "MPF"] and not any(k.startswith("E") for k in primary[4:])
    assert gain_map[:3] == ["JFIF", "XMP", "ISO"] and not any(k.startswith("E") for k in gain_map[3:])
    assert _payload(data, 0, "ISO") == ISO_URN + b"\x00" * 4  # minimum_version 0, writer_version 0
    assert len(_payload(data, start, "ISO")) == len(ISO_URN) + 61  # the full one-channel block
    xmp = _payload(data, 0, "XMP").decode()
    assert 'hdrgm:Version="1.0"' in xmp and 'Item:Semantic="GainMap"' in xmp
    assert int(re.search(r'Item:Length="(\d+)"', xmp).group(1)) == len(data) - start
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == hdr.shape[1::-1]


def test_mpf_index_as_pillow_reads_it(encoded):
    """Pillow's own MPF parser (``_getmp``, what its MPO reader uses; it opens Ultra HDR files as
    plain JPEGs, so the MPO reader is adopted by hand) finds both images where they are."""
    _, data = encoded
    start = _gain_map_start(data)
    primary = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    index = primary._getmp()
    entries = index[0xB002]
    assert [entry["Size"] for entry in entries] == [start, len(data) - start]
    assert entries[0]["DataOffset"] == 0 and primary.info["mpoffset"] + entries[1]["DataOffset"] == start
    pictures = MpoImagePlugin.MpoImageFile.adopt(primary, index)
    pictures.seek(1)
    with Image.open(io.BytesIO(data[start:])) as gain_map:
        np.testing.assert_array_equal(np.asarray(pictures.convert("RGB")), np.asarray(gain_map.convert("RGB")))


def test_metadata_numbers(encoded):
    """The ISO block holds the gain range of this HDR, gamma 1, offsets 1/1024 and headrooms
    0 (an SDR base) to the gain max; the hdrgm XMP holds the same numbers to 9 digits."""
    hdr, data = encoded
    metadata = read_gainmap_metadata(data)
    assert metadata.channel_count == 1 and metadata.use_base_colour_space
    assert metadata.gamma[0] == 1 and metadata.base_offset[0] == metadata.alternate_offset[0] == Fraction(1, 1024)
    assert metadata.base_hdr_headroom == 0 and metadata.alternate_hdr_headroom == metadata.gain_map_max[0]
    low, high = float(metadata.gain_map_min[0]), float(metadata.gain_map_max[0])
    assert low <= 0.05 and high == pytest.approx(np.log2((hdr.max() + 1 / 1024) / (1 + 1 / 1024)), abs=0.3)
    xmp = _payload(data, _gain_map_start(data), "XMP").decode()
    for name, value in [("GainMapMin", low), ("GainMapMax", high), ("Gamma", 1.0), ("OffsetSDR", 1 / 1024),
                        ("OffsetHDR", 1 / 1024), ("HDRCapacityMin", 0.0), ("HDRCapacityMax", high)]:
        assert float(re.search(rf'hdrgm:{name}="([^"]+)"', xmp).group(1)) == pytest.approx(value, rel=1e-8, abs=1e-12)


def test_xmp_only_readers_see_the_same_hdr(encoded):
    """Without the gain map's ISO block (an Ultra HDR 1.0 reader's view) the XMP gives the same HDR."""
    _, data = encoded
    start = _gain_map_start(data)
    (position, payload), = [(p, pl) for (_, p, pl), k in zip(app_segments(data, start), _segment_kinds(data, start))
                            if k == "ISO"]
    xmp_only = data[:position] + data[position + 4 + len(payload) :]
    np.testing.assert_allclose(decode_gainmap_jpeg(xmp_only)[1], decode_gainmap_jpeg(data)[1], rtol=1e-5, atol=1e-7)


def test_reconstruction_follows_the_formula():
    """Left half 4 (two stops over SDR white), right half 1/4. The SDR base clips the left to 1,
    so GainMapMax = log2((4 + k) / (1 + k)); HDR = (SDR + k)·2^(gain·w) - k gives 4 back at
    display weight w = 1 and (1 + k)·2^(GainMapMax / 2) - k ≈ 2 at w = 1/2."""
    k = 1 / 1024
    hdr = np.full((16, 32, 3), 0.25, np.float32)
    hdr[:, :16] = 4.0
    data = encode_gainmap_jpeg(hdr)
    gain_max = float(read_gainmap_metadata(data).gain_map_max[0])
    assert gain_max == pytest.approx(np.log2((4 + k) / (1 + k)), abs=1e-3)
    sdr, full = decode_gainmap_jpeg(data)
    np.testing.assert_allclose(sdr[:, :16], 1.0)
    np.testing.assert_allclose(full[:, :16], 4.0, rtol=0.01)
    np.testing.assert_allclose(full[:, 16:], 0.25, rtol=0.02)
    np.testing.assert_allclose(decode_gainmap_jpeg(data, weight=0.5)[1][:, :16], (1 + k) * 2 ** (gain_max / 2) - k,
                               rtol=0.01)


def test_not_a_gain_map_jpeg():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    with pytest.raises(ValueError, match="not a gain-map JPEG"):
        decode_gainmap_jpeg(buffer.getvalue())


def test_convert_writes_a_gain_map(studiolights, tmp_path):
    photo = tmp_path / "photo.png"
    write_png(photo, simulate_ldr(read_image(studiolights["city"]).pixels[::4, ::4]).pixels)
    done = subprocess.run([*LEDIFF, "convert", str(photo), "-o", str(tmp_path / "out.exr"), "--gainmap",
                           str(tmp_path / "out.jpg")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    hdr, _ = read_exr(tmp_path / "out.exr")
    data = (tmp_path / "out.jpg").read_bytes()
    assert log_luminance_rmse(decode_gainmap_jpeg(data)[1], hdr) <= ROUND_TRIP_RMSE_MAX
    assert "ISO" in _segment_kinds(data, _gain_map_start(data))


def test_unwritable_gain_map_fails_first(studiolights, tmp_path):
    photo = tmp_path / "photo.png"
    write_png(photo, np.zeros((8, 16, 3), np.float32))
    done = subprocess.run([*LEDIFF, "convert", str(photo), "-o", str(tmp_path / "out.exr"), "--gainmap",
                           str(tmp_path / "missing" / "out.jpg")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "output folder does not exist" in done.stderr
    assert not (tmp_path / "out.exr").exists()


# ISO 21496-1 blocks from libultrahdr's tests/gainmapmetadata_test.cpp (its pull request 467, which
# moved the writer to the final layout): the five-byte header, then 4-byte numbers in pairs.
ISO_GOLDEN = {
    "one channel, denominators 64": "0000000040 0000000000000040 000000c000000040 ffffffc000000040 0000008000000040 "
    "0000004000000040 0000000100000040 0000000200000040",
    "one channel, lowest terms": "0000000000 0000000000000001 0000000700000002 ffffffff00000003 0000000500000004 "
    "0000000600000005 ffffffff00000007 0000000200000009",
    "three channels, denominators 64": "00000000c0 0000000000000040 000000c000000040 ffffffc000000040 0000008000000040 "
    "0000004000000040 0000000100000040 0000000200000040 ffffffe000000040 000000a000000040 0000004800000040 "
    "0000000300000040 0000000400000040 fffffff000000040 000000c000000040 0000005000000040 0000000500000040 "
    "0000000600000040",
    "three channels, lowest terms": "00000000c0 0000000000000001 0000000700000002 ffffffff00000003 0000000500000004 "
    "0000000600000005 ffffffff00000007 0000000200000009 ffffffff00000003 0000000600000005 0000000600000005 "
    "ffffffff00000007 0000000200000009 ffffffff00000003 0000000500000004 0000000800000007 fffffffe0000000b "
    "0000000200000009",
    # the draft layout (flag bit 3: one common denominator, then numerators only)
    "draft, one channel": "0000000048 0000004000000000 000000c0ffffffc0 0000008000000040 0000000100000002",
    "draft, three channels": "00000000c8 0000004000000000 000000c0ffffffc0 0000008000000040 0000000100000002 "
    "ffffffe0000000a0 0000004800000003 00000004fffffff0 000000c000000050 0000000500000006",
}


def _fractions(*values: str) -> tuple[Fraction, ...]:
    return tuple(Fraction(v) for v in values)


_SIXTY_FOURTHS = {"gain_map_min": _fractions("-1", "-1/2", "-1/4"), "gain_map_max": _fractions("2", "5/2", "3"),
                  "gamma": _fractions("1", "9/8", "5/4"), "base_offset": _fractions("1/64", "3/64", "5/64"),
                  "alternate_offset": _fractions("1/32", "1/16", "3/32"),
                  "base_hdr_headroom": Fraction(0), "alternate_hdr_headroom": Fraction(3), "use_base_colour_space": True}
_LOWEST_TERMS = {"gain_map_min": _fractions("-1/3", "-1/3", "-1/3"), "gain_map_max": _fractions("5/4", "6/5", "5/4"),
                 "gamma": _fractions("6/5", "6/5", "8/7"), "base_offset": _fractions("-1/7", "-1/7", "-2/11"),
                 "alternate_offset": _fractions("2/9", "2/9", "2/9"),
                 "base_hdr_headroom": Fraction(0), "alternate_hdr_headroom": Fraction(7, 2), "use_base_colour_space": True}


def _first_channel(values: dict) -> dict:
    return {k: (v[0],) * 3 if isinstance(v, tuple) else v for k, v in values.items()}


ISO_EXPECTED = {
    "one channel, denominators 64": _first_channel(_SIXTY_FOURTHS),
    "one channel, lowest terms": {**_first_channel(_LOWEST_TERMS), "use_base_colour_space": False},
    "three channels, denominators 64": _SIXTY_FOURTHS,
    "three channels, lowest terms": _LOWEST_TERMS,
    "draft, one channel": _first_channel(_SIXTY_FOURTHS),
    "draft, three channels": _SIXTY_FOURTHS,
}


@pytest.mark.parametrize("name", ISO_GOLDEN)
def test_iso_golden_blocks(name):
    """libultrahdr's byte vectors decode to its numbers; those already in lowest terms (a
    Fraction keeps no other) encode back to the same bytes; the draft layout is read, not written."""
    block = bytes.fromhex(ISO_GOLDEN[name].replace(" ", ""))
    metadata = decode_iso_metadata(block)
    assert metadata == GainMapMetadata(**ISO_EXPECTED[name])
    encoded = encode_iso_metadata(metadata)
    assert len(encoded) == (141 if "three" in name else 61) and encoded[4] & 0x08 == 0
    if "lowest terms" in name:
        assert encoded == block


def test_iso_block_hand_computed():
    """Our files' kind of block, written out by hand from the layout in ``gainmap_iso``."""
    metadata = GainMapMetadata.from_floats(gain_map_min=0.0, gain_map_max=2.5, gamma=1.0, base_offset=1 / 1024,
                                           alternate_offset=1 / 1024, base_hdr_headroom=0.0, alternate_hdr_headroom=2.5)
    expected = ("0000 0000 40"  # versions 0 and 0; flags: one channel, base colour space
                "00000000 00000001 00000005 00000002"  # headrooms 0/1 and 5/2 stops
                "00000000 00000001 00000005 00000002 00000001 00000001"  # gain map min 0, max 5/2, gamma 1
                "00000001 00000400 00000001 00000400")  # offsets 1/1024
    assert encode_iso_metadata(metadata) == bytes.fromhex(expected.replace(" ", ""))


def test_iso_round_trip_of_floats():
    """Floats -> fractions -> bytes -> fractions: about 1e-9 off, three channels when they differ."""
    values = {"gain_map_min": (-0.0123456789, -0.5, 0.0), "gain_map_max": (7.123456789, 3.3, 12.75),
              "gamma": (1.0, 0.8, 2.2), "base_offset": (1 / 1024, 1 / 64, 0.0),
              "alternate_offset": (1 / 1024, 1 / 64, 0.0), "base_hdr_headroom": 0.0, "alternate_hdr_headroom": 12.75}
    block = encode_iso_metadata(GainMapMetadata.from_floats(**values))
    assert len(block) == 141 and block[4] == 0xC0
    decoded = decode_iso_metadata(block)
    for field, expected in values.items():
        np.testing.assert_allclose(np.asarray(getattr(decoded, field), float), expected, rtol=0, atol=1e-9)
    single = GainMapMetadata.from_floats(**{k: v[0] if isinstance(v, tuple) else v for k, v in values.items()})
    assert single.channel_count == 1 and len(encode_iso_metadata(single)) == 61


@pytest.mark.parametrize(("block", "message"), [
    ("0000000048 00000040000000000000", "truncated"),
    ("0001000040", "minimum version 1"),
    ("000000004c 0000004000000000 000000c0ffffffc0 0000008000000040 0000000100000002", "backward direction"),
    ("0000000048 0000000000000000 000000c0ffffffc0 0000008000000040 0000000100000002", "zero denominator"),
    ("0000000040 0000000000000001 0000000100000001 0000000200000001 0000000100000001 0000000100000001 "
     "0000000000000001 0000000000000001", "gain_map_min <= gain_map_max"),
])
def test_iso_bad_blocks(block, message):
    with pytest.raises(ValueError, match=message):
        decode_iso_metadata(bytes.fromhex(block.replace(" ", "")))


@pytest.mark.parametrize(("value", "signed"), [(-0.5, False), (2.0**31, True), (float("nan"), True)])
def test_values_that_do_not_fit_a_fraction(value, signed):
    with pytest.raises(ValueError, match="does not fit"):
        to_fraction(value, signed=signed)


def test_a_hand_made_fraction_too_fine_for_the_block():
    metadata = GainMapMetadata.from_floats(gain_map_min=0.0, gain_map_max=1.0, gamma=1.0, base_offset=0.0,
                                           alternate_offset=0.0, base_hdr_headroom=0.0, alternate_hdr_headroom=1.0)
    with pytest.raises(ValueError, match="does not fit"):
        encode_iso_metadata(GainMapMetadata(**{**vars(metadata), "alternate_hdr_headroom": Fraction(1, 2**33)}))
