"""Ultra HDR gain-map JPEGs (``hdr/gainmap.py``) and ``--gainmap`` on ``lediff convert``."""

from __future__ import annotations

import io
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from lediff_backend.hdr.color import luminance, srgb_to_linear
from lediff_backend.hdr.exposure import simulate_ldr
from lediff_backend.hdr.exr import read_exr
from lediff_backend.hdr.gainmap import _gain_map_start, decode_gainmap_jpeg, encode_gainmap_jpeg
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
