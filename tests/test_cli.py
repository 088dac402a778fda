"""Tests for the ``lediff`` command line: cli.py, commands/convert, info and preview, errors.py.

Every command runs as a real subprocess of the installed console script, so exit codes,
stderr and leftover files are what a user sees. The bad-input cases run concurrently (one
module-scoped fixture) to keep the interpreter start-ups from dominating the test time.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import OpenEXR
import pytest
from PIL import Image

from lediff_backend import errors
from lediff_backend.hdr.exposure import simulate_ldr
from lediff_backend.hdr.exr import read_exr, read_exr_info, write_exr
from lediff_backend.hdr.ldr import DEFAULT_MAX_PIXELS, write_jpeg, write_png
from lediff_backend.hdr.projection import resize_equirect

_SCRIPT = Path(sys.executable).with_name("lediff")
LEDIFF = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "lediff_backend.cli"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
WIDTH, HEIGHT = 256, 128


def lediff(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LEDIFF, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def write_raw_exr(path: Path, rgb: np.ndarray) -> None:
    """An EXR written by the bindings directly (write_exr refuses NaN and inf)."""
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"RGB": np.ascontiguousarray(rgb, np.float32)}).write(str(path))


def file_header(path: Path) -> dict:
    return OpenEXR.File(str(path), header_only=True).header()


@pytest.fixture(scope="module")
def files(studiolights, tmp_path_factory) -> SimpleNamespace:
    """Inputs made once: a real 8-bit panorama (the 'sunrise' studio light at 256x128, metered
    and sRGB-encoded as a phone would), its HDR truth, and broken files of every kind."""
    folder = tmp_path_factory.mktemp("inputs")
    hdr, _ = read_exr(studiolights["sunrise"])
    hdr = resize_equirect(hdr, WIDTH)
    photo = simulate_ldr(hdr).pixels
    f = SimpleNamespace(folder=folder)

    f.png = folder / "pano.png"
    write_png(f.png, photo)
    f.jpeg = folder / "pano.jpg"
    write_jpeg(f.jpeg, photo)
    f.exr = folder / "pano.exr"
    write_exr(f.exr, hdr, latlong=True)

    f.folder_input = folder / "a_folder.png"
    f.folder_input.mkdir()
    f.text = folder / "notes.png"
    f.text.write_text("this is not an image\n")
    f.truncated_png = folder / "truncated.png"
    f.truncated_png.write_bytes(f.png.read_bytes()[: f.png.stat().st_size // 2])
    f.truncated_jpeg = folder / "truncated.jpg"
    f.truncated_jpeg.write_bytes(f.jpeg.read_bytes()[: f.jpeg.stat().st_size // 2])
    # Over our cap, but under Pillow's own hard limit: only our guard stops it.
    f.bomb = folder / "bomb.png"
    f.bomb.write_bytes(png_header_only(17000, 8500))
    assert 17000 * 8500 > DEFAULT_MAX_PIXELS
    # So big that Pillow itself refuses it on opening.
    f.huge_bomb = folder / "huge_bomb.png"
    f.huge_bomb.write_bytes(png_header_only(100_000, 100_000))
    nan = hdr.copy()
    nan[5, 7, 1] = np.nan
    f.nan_exr = folder / "nan.exr"
    write_raw_exr(f.nan_exr, nan)
    inf = hdr.copy()
    inf[9, 3, 0] = np.inf
    f.inf_exr = folder / "inf.exr"
    write_raw_exr(f.inf_exr, inf)
    f.not_a_file = folder / "file.txt"
    f.not_a_file.write_text("x")
    return f


# --- every bad input: exit 2, one line on stderr, nothing left behind ---------------------

# case -> (command, arguments given the input files and an empty output folder `out`)
BAD_INPUTS = {
    "missing input": ("convert", lambda f, out: [f.folder / "missing.png", "-o", out / "o.exr"]),
    "folder as input": ("convert", lambda f, out: [f.folder_input, "-o", out / "o.exr"]),
    "text file named .png": ("convert", lambda f, out: [f.text, "-o", out / "o.exr"]),
    "truncated PNG": ("convert", lambda f, out: [f.truncated_png, "-o", out / "o.exr"]),
    "truncated JPEG": ("convert", lambda f, out: [f.truncated_jpeg, "-o", out / "o.exr"]),
    "decompression bomb": ("convert", lambda f, out: [f.bomb, "-o", out / "o.exr"]),
    "huge decompression bomb": ("convert", lambda f, out: [f.huge_bomb, "-o", out / "o.exr"]),
    "already HDR": ("convert", lambda f, out: [f.exr, "-o", out / "o.exr"]),
    "unknown engine": ("convert", lambda f, out: [f.png, "-o", out / "o.exr", "--engine", "magic"]),
    "width too small": ("convert", lambda f, out: [f.png, "-o", out / "o.exr", "--width", "8"]),
    "width too large": ("convert", lambda f, out: [f.png, "-o", out / "o.exr", "--width", "100000"]),
    "missing output folder": ("convert", lambda f, out: [f.png, "-o", out / "missing" / "o.exr"]),
    "output folder is a file": ("convert", lambda f, out: [f.png, "-o", f.not_a_file / "o.exr"]),
    "output is a folder": ("convert", lambda f, out: [f.png, "-o", out]),
    "unsupported output extension": ("convert", lambda f, out: [f.png, "-o", out / "o.txt"]),
    "NaN EXR to info": ("info", lambda f, out: [f.nan_exr]),
    "inf EXR to info": ("info", lambda f, out: [f.inf_exr]),
    "missing file to info": ("info", lambda f, out: [f.folder / "missing.exr"]),
    "LDR input to preview": ("preview", lambda f, out: [f.png, "-o", out / "p.png"]),
    "NaN EXR to preview": ("preview", lambda f, out: [f.nan_exr, "-o", out / "p.png"]),
    "preview not a PNG": ("preview", lambda f, out: [f.exr, "-o", out / "p.jpg"]),
    "preview width too small": ("preview", lambda f, out: [f.exr, "-o", out / "p.png", "--width", "-5"]),
    "preview width too large": ("preview", lambda f, out: [f.exr, "-o", out / "p.png", "--width", "100000"]),
}
if Path("/sys/kernel").is_dir():
    # sysfs refuses new files even to root, whom os.access lets through: the failure
    # comes only when the file is created, after the conversion itself.
    BAD_INPUTS["unwritable output folder"] = (
        "convert", lambda f, out: [f.png, "-o", "/sys/kernel/lediff-test.exr"]
    )
if not IS_ROOT:
    BAD_INPUTS["read-only output folder"] = ("convert", lambda f, out: [f.png, "-o", out / "locked" / "o.exr"])


@pytest.fixture(scope="module")
def bad_input_runs(files, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Run every BAD_INPUTS case once, concurrently; case -> (result, its output folder)."""
    jobs = {}
    for index, (case, (command, arguments)) in enumerate(BAD_INPUTS.items()):
        out = tmp_path_factory.mktemp(f"out{index}")
        if case == "read-only output folder":
            (out / "locked").mkdir(mode=0o500)
        jobs[case] = (command, arguments(files, out), out)
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 2) as pool:
        futures = {case: pool.submit(lediff, command, *args) for case, (command, args, _) in jobs.items()}
        return {case: (future.result(), jobs[case][2]) for case, future in futures.items()}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(case, bad_input_runs):
    command = BAD_INPUTS[case][0]
    result, out = bad_input_runs[case]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    # One error line and nothing else: every bad input is found before any work starts.
    assert lines[-1].startswith(f"lediff {command}: error: "), result.stderr
    assert len(lines) == 1, result.stderr
    leftovers = [p for p in out.rglob("*") if p.name != "locked"]
    assert leftovers == [], f"left behind: {leftovers}"


def test_unwritable_output_leaves_no_file(bad_input_runs):
    if "unwritable output folder" not in bad_input_runs:
        pytest.skip("needs Linux sysfs")
    assert "not writable" in bad_input_runs["unwritable output folder"][0].stderr
    assert not [p for p in Path("/sys/kernel").iterdir() if "lediff-test" in p.name]


def test_bad_input_messages_name_the_problem(bad_input_runs):
    def message(case: str) -> str:
        return bad_input_runs[case][0].stderr.splitlines()[-1]

    assert "not found" in message("missing input")
    assert "too large" in message("decompression bomb")
    assert "truncated" in message("truncated JPEG")
    assert "already HDR" in message("already HDR")
    assert "NaN or infinite" in message("NaN EXR to info")
    assert "NaN or infinite" in message("inf EXR to info")
    assert "'magic'" in message("unknown engine")
    assert "width must be between" in message("width too large")
    assert "does not exist" in message("missing output folder")
    assert "not HDR" in message("LDR input to preview")


# --- help and lazy imports --------------------------------------------------------------


class TestParser:
    def test_help_imports_no_numpy_or_torch(self):
        code = (
            "import sys\n"
            "from lediff_backend import cli\n"
            "for name in (None, 'convert', 'info', 'preview'):\n"
            "    cli.build_parser(name).format_help()\n"
            "print('torch' in sys.modules, 'numpy' in sys.modules)\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["False", "False"]

    def test_help(self):
        result = lediff("--help")
        assert result.returncode == 0
        for name in ("convert", "info", "preview", "demo"):
            assert name in result.stdout

    def test_command_help_lists_its_options(self):
        result = lediff("convert", "--help")
        assert result.returncode == 0
        for option in ("--output", "--engine", "--width", "--half", "--sun-ev"):
            assert option in result.stdout

    def test_no_command_is_a_usage_error(self):
        result = lediff()
        assert result.returncode == 2
        assert "usage: lediff" in result.stderr

    def test_argparse_errors_exit_2(self, files):
        result = lediff("convert", files.png)  # no -o
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-1].startswith("lediff convert: error: ")


class TestErrors:
    @pytest.mark.parametrize(
        "error, code, exit_code",
        [
            (errors.LediffError, "internal", 1),
            (errors.BadRequest, "bad_request", 2),
            (errors.BadInput, "bad_input", 2),
            (errors.MissingWeights, "missing_weights", 3),
            (errors.OutOfMemory, "out_of_memory", 4),
            (errors.Cancelled, "cancelled", 130),
        ],
    )
    def test_table(self, error, code, exit_code):
        assert issubclass(error, errors.LediffError)
        assert (error.code, error.exit_code) == (code, exit_code)
        assert str(error("what went wrong")) == "what went wrong"


# --- convert ----------------------------------------------------------------------------


def convert(files, tmp_path, *options) -> tuple[dict, np.ndarray, Path]:
    output = tmp_path / "out.exr"
    result = lediff("convert", files.png, "-o", output, *options)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == ["out.exr"]  # no temporary file left
    pixels, _ = read_exr(output)
    return json.loads(result.stdout), pixels, output


class TestConvert:
    def test_writes_valid_hdr_panorama(self, files, tmp_path):
        result = lediff("convert", files.png, "-o", tmp_path / "out.exr")
        assert result.returncode == 0, result.stderr
        assert "convert: linearise 0/" in result.stderr  # progress on stderr
        meta = json.loads(result.stdout)
        output = tmp_path / "out.exr"
        assert meta["output"] == str(output)
        assert (meta["width"], meta["height"], meta["panorama"], meta["engine"]) == (WIDTH, HEIGHT, True, "classic")
        assert os.listdir(tmp_path) == ["out.exr"]

        pixels, attributes = read_exr(output)
        assert pixels.shape == (HEIGHT, WIDTH, 3)
        assert np.isfinite(pixels).all() and pixels.min() >= 0
        assert pixels.max() > 1.0  # highlights expanded beyond the photo's white
        assert read_exr_info(output).bit_depth == 32

        header = file_header(output)
        assert header["envmap"] == OpenEXR.ENVMAP_LATLONG
        for key in ("width", "height", "panorama", "peak", "median", "stops", "sun", "engine"):
            assert f"lediff:{key}" in attributes
        assert attributes["lediff:engine"] == "classic"
        assert float(attributes["lediff:peak"]) == pytest.approx(meta["peak"])
        luminance = pixels @ np.float32([0.2126, 0.7152, 0.0722])
        assert meta["peak"] == pytest.approx(float(luminance.max()), rel=1e-6)

    def test_width_resizes(self, files, tmp_path):
        meta, pixels, _ = convert(files, tmp_path, "--width", "128")
        assert pixels.shape == (64, 128, 3)
        assert (meta["width"], meta["height"]) == (128, 64)

    def test_half(self, files, tmp_path):
        _, pixels, output = convert(files, tmp_path, "--half")
        assert read_exr_info(output).bit_depth == 16
        assert pixels.shape == (HEIGHT, WIDTH, 3) and pixels.max() > 1.0

    def test_sun_ev_changes_the_peak(self, files, tmp_path):
        low, _, _ = convert(files, tmp_path, "--sun-ev", "2")
        high, _, _ = convert(files, tmp_path, "--sun-ev", "14")
        assert high["peak"] > 4 * low["peak"]


# --- info -------------------------------------------------------------------------------


class TestInfo:
    def test_exr_text(self, files):
        result = lediff("info", files.exr)
        assert result.returncode == 0, result.stderr
        assert f"{WIDTH} x {HEIGHT}  (360° panorama)" in result.stdout
        assert "EXR, 32-bit, HDR" in result.stdout
        assert "stops" in result.stdout and "peak" in result.stdout
        assert "direction [" in result.stdout  # the sun line

    def test_exr_json(self, files):
        result = lediff("info", files.exr, "--json")
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert (info["format"], info["bit_depth"], info["is_hdr"]) == ("EXR", 32, True)
        assert (info["width"], info["height"], info["panorama"]) == (WIDTH, HEIGHT, True)
        pixels, _ = read_exr(files.exr)
        luminance = pixels @ np.float32([0.2126, 0.7152, 0.0722])
        assert info["peak"] == pytest.approx(float(luminance.max()), rel=1e-6)
        assert info["stops"] > 8  # a real sunrise
        assert len(info["sun"]["direction"]) == 3
        assert 0 < info["sun"]["direction"][2] < np.sin(np.radians(30))  # low in the sky

    def test_png(self, files):
        text = lediff("info", files.png)
        assert text.returncode == 0, text.stderr
        assert "PNG, 8-bit, LDR" in text.stdout
        result = lediff("info", files.png, "--json")
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert (info["format"], info["bit_depth"], info["is_hdr"]) == ("PNG", 8, False)
        assert (info["width"], info["height"]) == (WIDTH, HEIGHT)
        assert info["peak"] == pytest.approx(1.0)  # linearised, white stays 1


# --- preview ----------------------------------------------------------------------------


def preview(files, output: Path, *options) -> np.ndarray:
    result = lediff("preview", files.exr, "-o", output, *options)
    assert result.returncode == 0, result.stderr
    assert os.listdir(output.parent).count(output.name) == 1
    with Image.open(output) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return np.asarray(image)


class TestPreview:
    @pytest.mark.parametrize("tonemap", ["reinhard", "exposure", "local"])
    def test_each_tonemap(self, files, tmp_path, tonemap):
        pixels = preview(files, tmp_path / "p.png", "--tonemap", tonemap, "--ev", "0")
        assert pixels.shape == (HEIGHT, WIDTH, 3)
        assert 0 < pixels.mean() < 255
        assert sorted(os.listdir(tmp_path)) == ["p.png"]

    def test_ev_brightens(self, files, tmp_path):
        dark = preview(files, tmp_path / "dark.png", "--tonemap", "exposure", "--ev", "-2")
        bright = preview(files, tmp_path / "bright.png", "--tonemap", "exposure", "--ev", "2")
        assert bright.mean() > dark.mean() + 20

    def test_default_and_width(self, files, tmp_path):
        pixels = preview(files, tmp_path / "p.png", "--width", "64")
        assert pixels.shape == (32, 64, 3)
        assert 30 < pixels.mean() < 220  # automatic exposure: neither black nor white


def test_progress_lines_are_throttled_within_a_stage(capsys):
    from lediff_backend.commands._console import StderrProgress

    progress = StderrProgress("text2hdr", interval_s=60.0)
    for step in range(1, 31):
        progress("highlight", step, 30)
    for step in range(1, 31):
        progress("shadow", step, 30)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "text2hdr: highlight 1/30", "text2hdr: highlight 30/30", "text2hdr: shadow 1/30", "text2hdr: shadow 30/30"]
