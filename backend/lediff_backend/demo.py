"""The demo: a phone's 8-bit 360° photo -> HDR (classic engine) -> lookdev renders in Blender.

Steps, each reported on stderr:

1. Take a real CC0 HDRI that ships with Blender's bpy wheel (the ground truth) and resize it.
2. Make the photo a user would have: phone metering (median to mid-grey, at most 5% clipped),
   sRGB response, 8-bit, saved as a JPEG at quality 90.
3. Convert that JPEG to an HDR EXR with the classic engine, plus a tone-mapped preview PNG.
4. Render the lookdev scene (grey and chrome spheres, a red cube, f/2.8 on the chrome ball) in
   headless Blender three times, lit by (a) the JPEG itself, which Blender linearises from sRGB
   as it would for a user who drops it in, (b) our HDR, (c) the ground truth; then compose the
   three stills side by side, labelled, in one PNG.

The photo and our HDR are relative to the photo's exposure, the truth is absolute. As a user
would match a background by eye, each map gets the world EV that makes its unclipped pixels
(those the photo kept between code values 5 and 250) match the truth; what then differs
between the renders is only the light the photo clipped. All three share one exposure, set by
an incident-light meter on the truth (a white ground lit by it renders at 1.0).

The renders run in a subprocess of this interpreter (``python -m lediff_blender.render_job``,
the add-on from this source tree) so that bpy's memory and crashes stay out of this process.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import lediff_backend

from .convert import convert_file
from .errors import BadInput, LediffError
from .hdr.atomic import atomic_output
from .hdr.color import luminance, srgb_to_linear
from .hdr.exposure import simulate_ldr
from .hdr.exr import read_exr
from .hdr.ldr import read_ldr, write_jpeg, write_png
from .hdr.metrics import fit_scale
from .hdr.projection import equirect_directions, resize_equirect, solid_angle_weights
from .hdr.tonemap import auto_exposure_ev, exposure_srgb
from .sample_data import studiolight_path

__all__ = ["DemoOutputs", "run_demo", "find_source_root", "incident_ev", "world_evs", "compose_side_by_side"]

DEFAULT_HDRI = "city"  # a high sun in a hazy sky: hard shadows that an 8-bit photo loses
DEFAULT_WIDTH = 1024
DEFAULT_RENDER_SIZE = (320, 240)
DEFAULT_SAMPLES = 32
JPEG_QUALITY = 90
FSTOP = 2.8
LABELS = ("8-bit photo (JPEG)", "our HDR (classic engine)", "ground truth HDR")
# Printed by lediff_blender.render_job after each still (kept in step with it by the demo test).
RENDER_PROGRESS_PREFIX = "render_job: done"

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class DemoOutputs:
    """Every file the demo writes."""

    photo: Path
    hdr: Path
    preview: Path
    renders: tuple[Path, Path, Path]  # lit by the photo, our HDR, the truth
    lookdev: Path

    def paths(self) -> list[Path]:
        return [self.photo, self.hdr, self.preview, *self.renders, self.lookdev]


def find_source_root() -> Path:
    """The source tree holding ``backend/lediff_backend`` and the add-on ``lediff_blender/``."""
    root = Path(lediff_backend.__file__).resolve().parents[2]
    if not (root / "lediff_blender" / "render_job.py").is_file():
        raise BadInput(
            f"the demo renders with the add-on in a source checkout, and {root / 'lediff_blender'} "
            "is missing: run it from a clone of the repository (pip install -e backend)"
        )
    return root


def incident_ev(hdr: np.ndarray) -> float:
    """EV at which a white, upward-facing diffuse surface lit by ``hdr`` has radiance 1.

    An incident-light meter: it exposes for the light falling on the subject, so 18% grey
    renders as mid-grey whatever the map's own median is.
    """
    height, width = hdr.shape[:2]
    up = np.clip(equirect_directions(height, width)[..., 2], 0.0, None)
    irradiance = float((luminance(hdr) * up * solid_angle_weights(height, width)).sum())
    return float(np.log2(np.pi / irradiance))


def world_evs(photo_encoded: np.ndarray, maps: list[np.ndarray], truth: np.ndarray) -> list[float]:
    """World EV per map: matched to ``truth`` on the photo's unclipped pixels, metered on the truth."""
    brightest = photo_encoded.max(axis=-1)
    kept = (brightest > 5 / 255) & (brightest < 250 / 255)
    if not kept.any():
        raise BadInput("no pixels to match exposures on: the photo is all clipped or black")
    exposure = incident_ev(truth)
    return [exposure + float(np.log2(fit_scale(image, truth, kept))) for image in maps]


def run_demo(
    out_dir: str | os.PathLike,
    *,
    hdri: str = DEFAULT_HDRI,
    width: int = DEFAULT_WIDTH,
    render_size: tuple[int, int] = DEFAULT_RENDER_SIZE,
    samples: int = DEFAULT_SAMPLES,
    progress: ProgressFn = lambda message: None,
) -> DemoOutputs:
    """Run every step; return the paths written in ``out_dir`` (created if needed)."""
    root = find_source_root()
    truth_path = studiolight_path(hdri)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    outputs = DemoOutputs(
        photo=out / f"{hdri}_photo.jpg",
        hdr=out / f"{hdri}_hdr.exr",
        preview=out / f"{hdri}_preview.png",
        renders=tuple(out / f"{hdri}_render_{kind}.png" for kind in ("photo", "hdr", "truth")),
        lookdev=out / f"{hdri}_lookdev.png",
    )

    # 1. the ground truth
    progress(f"ground truth: {truth_path.name} (CC0, from the bpy wheel) at width {width}")
    truth = resize_equirect(read_exr(truth_path)[0], width)

    # 2. the phone photo
    photo = simulate_ldr(truth, response="srgb")
    write_jpeg(outputs.photo, photo.pixels, quality=JPEG_QUALITY)
    progress(f"phone photo: {outputs.photo.name}, metered at EV {photo.ev:+.2f}, 8-bit sRGB JPEG q{JPEG_QUALITY}")

    # 3. our HDR and its preview
    started = time.perf_counter()
    meta = convert_file(outputs.photo, outputs.hdr, engine="classic")
    hdr = read_exr(outputs.hdr)[0]
    seconds = time.perf_counter() - started
    progress(f"classic engine: {outputs.hdr.name}, {meta['stops']} stops, peak {meta['peak']:.3g} (white = 1), {seconds:.1f} s")
    write_png(outputs.preview, exposure_srgb(hdr, auto_exposure_ev(hdr)))
    progress(f"preview: {outputs.preview.name}")

    # 4. lookdev renders; the JPEG lights Blender as decoded from sRGB, nothing above 1
    photo_encoded = read_ldr(outputs.photo).pixels
    evs = world_evs(photo_encoded, [srgb_to_linear(photo_encoded), hdr, truth], truth)
    progress("world EVs: photo {:+.2f}, ours {:+.2f}, truth {:+.2f}".format(*evs))
    environments = (outputs.photo, outputs.hdr, truth_path)
    _render_lookdev(root, list(zip(environments, evs, outputs.renders)), render_size, samples, progress)

    compose_side_by_side(outputs.renders, LABELS, outputs.lookdev)
    progress(f"side by side: {outputs.lookdev.name}")
    return outputs


def _render_lookdev(
    root: Path, jobs: list[tuple[Path, float, Path]], size: tuple[int, int], samples: int, progress: ProgressFn
) -> None:
    """Render one still per (environment, world EV, output PNG) in a headless Blender subprocess."""
    command = [sys.executable, "-m", "lediff_blender.render_job", "--width", str(size[0]), "--height", str(size[1])]
    command += ["--samples", str(samples), "--fstop", str(FSTOP)]
    for environment, ev, output in jobs:
        command += ["--environment", str(environment), "--ev", f"{ev:.4f}", "--output", str(output)]
    progress(f"rendering {len(jobs)} lookdev stills in headless Blender ({size[0]}x{size[1]}, {samples} samples)")
    with tempfile.TemporaryDirectory(prefix="lediff-blender-user-") as user_resources:
        env = dict(os.environ, BLENDER_USER_RESOURCES=user_resources)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
        tail = collections.deque(maxlen=40)
        with subprocess.Popen(
            command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
        ) as process:
            for line in process.stdout:
                tail.append(line.rstrip())
                if line.startswith(RENDER_PROGRESS_PREFIX):
                    progress("  " + line[len(RENDER_PROGRESS_PREFIX):].strip())
        if process.returncode != 0:
            log = "\n".join(tail)
            raise LediffError(f"the lookdev render failed (exit code {process.returncode}):\n{log}")


def compose_side_by_side(images, labels, output: str | os.PathLike, *, band: int = 16) -> Path:
    """Paste equally sized images left to right under a dark band holding each one's label."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = [Image.open(path).convert("RGB") for path in images]
    width, height = tiles[0].size
    canvas = Image.new("RGB", (width * len(tiles), height + band), (20, 20, 20))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, (tile, label) in enumerate(zip(tiles, labels)):
        canvas.paste(tile, (index * width, band))
        draw.text((index * width + 4, 2), label, fill=(235, 235, 235), font=font)
    with atomic_output(output) as temporary:
        canvas.save(temporary, format="PNG")
    return Path(output)
