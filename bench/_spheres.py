"""Cycles renders of a diffuse and a glossy sphere lit by environment maps, for ``fidelity.py``.

Runs in a process of its own (``import bpy`` costs seconds and hundreds of MB, and a crash
stays here); ``fidelity.py`` starts it with the repository root on ``PYTHONPATH``:

    python bench/_spheres.py JOBS.json

``JOBS.json``: ``{"width": W, "height": H, "samples": N, "jobs": [{"environment": path,
"ev": world EV, "output": path.exr}, ...]}``. The scene is built once: the lookdev's two
spheres (no ground, no cube), the left one made diffuse (white, no specular layer), the right
one glossy (metal, roughness 0.25: it integrates the light over a lobe instead of mirroring a
sub-pixel sun), seen by an orthographic camera that frames both side by side. Each job swaps
the world's image (``world.apply_environment``) and writes a linear RGBA float EXR whose alpha
marks the spheres (transparent film), without denoising. One line per still goes to stderr.
"""

from __future__ import annotations

import json
import math
import sys
import time

import bpy

from lediff_blender import lookdev, world

MATERIALS = {
    lookdev.GREY_SPHERE: {"Base Color": (0.8, 0.8, 0.8, 1.0), "Metallic": 0.0, "Roughness": 1.0,
                          "Specular IOR Level": 0.0},
    lookdev.CHROME_SPHERE: {"Base Color": (0.9, 0.9, 0.9, 1.0), "Metallic": 1.0, "Roughness": 0.25},
}
# The spheres stand at x = -1.1 and 0, radius 0.5, centres 0.5 m above the origin.
CAMERA = {"location": (-0.55, -6.0, 0.5), "ortho_scale": 2.4}


def build_scene(width: int, height: int, samples: int) -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.world = bpy.data.worlds.new("Fidelity")
    lookdev.build_lookdev_scene(scene, ground=False, colour_cube=False)
    for name, inputs in MATERIALS.items():
        bsdf = bpy.data.materials[name].node_tree.nodes["Principled BSDF"]
        for socket, value in inputs.items():
            bsdf.inputs[socket].default_value = value
    camera = bpy.data.objects.new("Fidelity Camera", bpy.data.cameras.new("Fidelity Camera"))
    scene.collection.objects.link(camera)
    camera.data.type, camera.data.ortho_scale = "ORTHO", CAMERA["ortho_scale"]
    camera.location, camera.rotation_euler = CAMERA["location"], (math.pi / 2, 0.0, 0.0)  # looking along +Y
    scene.camera = camera
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.film_transparent, render.use_file_extension = True, False
    settings = render.image_settings
    settings.file_format, settings.color_mode, settings.color_depth = "OPEN_EXR", "RGBA", "32"
    scene.render.engine = "CYCLES"
    cycles = scene.cycles
    cycles.device, cycles.samples, cycles.seed, cycles.use_animated_seed = "CPU", samples, 0, False
    cycles.use_denoising = False  # measured means stay unbiased
    cycles.max_bounces, cycles.diffuse_bounces, cycles.glossy_bounces = 2, 1, 1
    cycles.caustics_reflective = cycles.caustics_refractive = False  # no sun fireflies via the other sphere
    # A fixed importance map and persistent data: a still takes ~0.2 s + sampling instead of ~2 s.
    scene.world.cycles.sampling_method, scene.world.cycles.sample_map_resolution = "MANUAL", 1024
    render.use_persistent_data = True
    return scene


def main(jobs_file: str) -> int:
    spec = json.loads(open(jobs_file, encoding="utf-8").read())
    scene = build_scene(spec["width"], spec["height"], spec["samples"])
    for index, job in enumerate(spec["jobs"], start=1):
        start = time.perf_counter()
        world.apply_environment(scene.world, job["environment"], ev=job["ev"])
        scene.render.filepath = job["output"]
        bpy.ops.render.render(write_still=True, scene=scene.name)
        print(f"spheres: {index}/{len(spec['jobs'])} {time.perf_counter() - start:.2f}s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
