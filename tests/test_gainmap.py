"""Ultra HDR gain-map JPEGs (``hdr/gainmap.py``), their ISO 21496-1 metadata block
(``hdr/gainmap_iso.py``) and ``--gainmap`` on ``lediff convert``."""

from __future__ import annotations

import io
import re
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from lediff_backend.hdr.color import luminance, srgb_to_linear
from lediff_backend.hdr.exposure import simulate_ldr
from lediff_backend.hdr.exr import read_exr
from lediff_backend.hdr.gainmap import _gain_map_start, decode_gainmap_jpeg, encode_gainmap_jpeg
from lediff_backend.hdr.gainmap_iso import GainMapMetadata, decode_iso_metadata, encode_iso_metadata, to_fraction
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


def test_layout(encoded):
    """SDR JPEG with the container XMP and an MPF index, then the gain map JPEG to the end."""
    hdr, data = encoded
    with Image.open(io.BytesIO(data)) as primary:
        assert primary.size == hdr.shape[1::-1]
        xmp = primary.info["xmp"].decode()
    assert 'hdrgm:Version="1.0"' in xmp and 'Item:Semantic="GainMap"' in xmp
    start = _gain_map_start(data)
    assert data[start - 2 : start] == b"\xff\xd9" and data[start : start + 2] == b"\xff\xd8"
    assert int(re.search(r'Item:Length="(\d+)"', xmp).group(1)) == len(data) - start
    with Image.open(io.BytesIO(data[start:])) as gain_map:
        gain_xmp = gain_map.info["xmp"].decode()
    low, high = (float(re.search(rf'hdrgm:{name}="([^"]+)"', gain_xmp).group(1)) for name in ("GainMapMin", "GainMapMax"))
    assert low <= 0.05 and high == pytest.approx(np.log2((hdr.max() + 1 / 1024) / (1 + 1 / 1024)), abs=0.3)


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
    assert log_luminance_rmse(decode_gainmap_jpeg((tmp_path / "out.jpg").read_bytes())[1], hdr) <= ROUND_TRIP_RMSE_MAX


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
