"""Add-on timings in headless Blender (bpy module), printed as JSON.

- ``apply_world_4096x2048``: ``bpy.ops.lediff.apply_world`` for a 4096x2048 float EXR that Blender
  has not loaded yet, from the operator call until the World is ready to render (the operator
  reads the pixels before it returns, so its return is that moment). Cold for Blender each run:
  the image datablock is removed in between (the file stays in the OS cache).
- ``add_sun_4096x2048``: ``bpy.ops.lediff.add_sun`` on that map, sun taken out of the map.
- ``pump``: a classic convert through a real backend subprocess (2048x1024 PNG to a 4096x2048
  EXR), with ``generation.pump`` called every 10 ms as the timer would (every 100 ms): the worst
  tick, the worst tick apart from the one that applies the result (it loads the 4096x2048 EXR
  into the World), how many ticks, and the job's wall time from Generate to ``done`` applied.

Timing: best of ``--repeat`` (the pump: one job, after one warm-up job).

    .venv/bin/python bench/addon.py [--repeat 5] [--out result.json]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import best_of, emit, machine, parser
from server import write_panorama

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="lediff-bench-blender-"))

import bpy  # noqa: E402  (after its user folder is set)
import addon_utils  # noqa: E402,I001  (importable once bpy is)

from lediff_backend.hdr.exr import write_exr  # noqa: E402
from lediff_backend.hdr.projection import equirect_directions  # noqa: E402

SIZE = (2048, 4096)


def write_sky(path: Path) -> Path:
    """A 4096x2048 sky with a 1° sun, float32 EXR."""
    directions = equirect_directions(*SIZE)
    up = np.clip(directions[..., 2:3], 0.0, 1.0)
    pixels = ((0.4 + 0.6 * up) * np.array([0.55, 0.75, 1.0], np.float32)).astype(np.float32)
    sun = np.array([np.cos(0.4) * np.cos(0.7), np.cos(0.4) * np.sin(0.7), np.sin(0.4)])
    pixels[directions @ sun > np.cos(np.radians(0.5))] = 3000.0
    write_exr(path, pixels, latlong=True)
    return path


def apply_cold(index: int = 0) -> None:
    for image in list(bpy.data.images):
        bpy.data.images.remove(image)
    assert bpy.ops.lediff.apply_world(index=index) == {"FINISHED"}


def pump_ticks(photo: Path, results: Path) -> dict:
    """One generation through the real backend, pumped every 10 ms; tick durations in seconds."""
    from lediff_blender import generation

    prefs = bpy.context.preferences.addons["lediff_blender"].preferences
    prefs.python_path, prefs.output_dir = sys.executable, str(results)
    settings = bpy.context.scene.lediff
    settings.mode, settings.photo, settings.width, settings.engine = "PHOTO", str(photo), SIZE[1], "classic"
    state = bpy.context.window_manager.lediff_job
    start = time.perf_counter()
    assert bpy.ops.lediff.generate() == {"FINISHED"}
    ticks = []
    while state.state not in ("DONE", "FAILED", "CANCELLED"):
        tick = time.perf_counter()
        generation.pump()
        ticks.append((time.perf_counter() - tick, state.state))
        time.sleep(0.01)
    assert state.state == "DONE", state.message
    return {
        "worst_tick_s": max(t for t, _ in ticks),
        "worst_tick_before_done_s": max(t for t, s in ticks if s != "DONE"),
        "done_tick_s": ticks[-1][0],
        "ticks": len(ticks),
        "job_s": time.perf_counter() - start,
    }


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.world = bpy.data.worlds.new("Bench")
    addon_utils.enable("lediff_blender", default_set=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            sky = write_sky(folder / "sky.exr")
            assert bpy.ops.lediff.open_hdri(filepath=str(sky)) == {"FINISHED"}
            apply_s, _ = best_of(apply_cold, args.repeat)
            sun_s, _ = best_of(lambda: bpy.ops.lediff.add_sun(remove_from_map=True), args.repeat)
            photo = write_panorama(folder / "photo.png")
            pump_ticks(photo, folder / "results")  # warm-up: imports in the backend, kernels
            pump = pump_ticks(photo, folder / "results")
    finally:
        addon_utils.disable("lediff_blender", default_set=True)  # also stops the timer and the backend
    emit(
        {
            "benchmark": "addon",
            "machine": {**machine(), "blender": bpy.app.version_string},
            "repeat": args.repeat,
            "apply_world_4096x2048": apply_s._asdict(),
            "add_sun_4096x2048": sun_s._asdict(),
            "pump_convert_2048x1024_to_4096": pump,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
