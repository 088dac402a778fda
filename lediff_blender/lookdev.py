"""Lookdev scene and stills: ground, grey and chrome spheres, a coloured cube, a camera with DoF.

Pure bpy. Objects, meshes and materials carry fixed names (the constants below) and are reused
when built again. Meshes come from ``bmesh``, so nothing here depends on an editor context.

Layout in metres: the objects stand on the ground (z = 0) in a row along X (grey sphere at
x = -1.1, chrome at 0, cube at +1.1); the camera looks along +Y from y = -6, 1.6 m high.

Stills (``render_still``) use the AgX view transform (Blender's default since 4.0), which rolls
off highlights such as a sun in a chrome ball instead of clipping them, so LDR and HDR lighting
compare fairly. Cycles runs on the CPU with a fixed seed (deterministic), OpenImageDenoise where
the build has it.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bmesh
import bpy
from mathutils import Vector

__all__ = [
    "LookdevObjects",
    "build_lookdev_scene",
    "ensure_camera",
    "set_depth_of_field",
    "focus_distance_to",
    "render_still",
    "oidn_available",
]

COLLECTION = "LEDiff Lookdev"
GROUND = "LEDiff Ground"
GREY_SPHERE = "LEDiff Grey Sphere"
CHROME_SPHERE = "LEDiff Chrome Sphere"
COLOUR_CUBE = "LEDiff Colour Cube"
CAMERA = "LEDiff Camera"

SPHERE_RADIUS = 0.5
CAMERA_LOCATION = (0.0, -6.0, 1.6)
CAMERA_TARGET = (0.0, 0.0, 0.45)

# name -> Principled BSDF inputs; the grey ball is 18% grey, the lookdev convention
_MATERIALS = {
    GROUND: {"Base Color": (0.35, 0.35, 0.35, 1.0), "Roughness": 0.8},
    GREY_SPHERE: {"Base Color": (0.18, 0.18, 0.18, 1.0), "Roughness": 0.6},
    CHROME_SPHERE: {"Base Color": (0.95, 0.95, 0.95, 1.0), "Metallic": 1.0, "Roughness": 0.03},
    COLOUR_CUBE: {"Base Color": (0.8, 0.12, 0.04, 1.0), "Roughness": 0.35},
}


@dataclass(frozen=True)
class LookdevObjects:
    """The objects ``build_lookdev_scene`` made or found; None where not requested."""

    ground: bpy.types.Object | None
    grey_sphere: bpy.types.Object | None
    chrome_sphere: bpy.types.Object | None
    colour_cube: bpy.types.Object | None


def build_lookdev_scene(
    scene: bpy.types.Scene, *, ground: bool = True, spheres: bool = True, colour_cube: bool = True
) -> LookdevObjects:
    """Add (or reuse) the lookdev objects in a ``LEDiff Lookdev`` collection of ``scene``."""
    collection = _ensure_collection(scene)
    wanted = {GROUND: ground, GREY_SPHERE: spheres, CHROME_SPHERE: spheres, COLOUR_CUBE: colour_cube}
    return LookdevObjects(*(_ensure_object(collection, name) if want else None for name, want in wanted.items()))


def ensure_camera(scene: bpy.types.Scene, *, lens_mm: float = 50.0) -> bpy.types.Object:
    """The lookdev camera (created once), aimed at the lookdev objects and made the scene camera."""
    camera = bpy.data.objects.get(CAMERA)
    if camera is None:
        camera = bpy.data.objects.new(CAMERA, bpy.data.cameras.new(CAMERA))
    collection = _ensure_collection(scene)
    if camera.name not in collection.objects:
        collection.objects.link(camera)
    camera.data.lens = lens_mm
    camera.location = CAMERA_LOCATION
    direction = Vector(CAMERA_TARGET) - Vector(CAMERA_LOCATION)
    camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera
    return camera


def set_depth_of_field(
    camera: bpy.types.Object,
    *,
    fstop: float | None,
    focus_object: bpy.types.Object | None = None,
    focus_distance: float | None = None,
) -> None:
    """Depth of field at ``fstop`` (None turns it off), focused on an object or at a distance (m)."""
    dof = camera.data.dof
    dof.use_dof = fstop is not None
    if fstop is None:
        return
    if fstop <= 0:
        raise ValueError(f"f-stop must be positive, got {fstop}")
    dof.aperture_fstop = fstop
    dof.focus_object = focus_object
    if focus_distance is not None:
        dof.focus_distance = focus_distance


def focus_distance_to(camera: bpy.types.Object, point) -> float:
    """Distance (m) from the camera to ``point`` along its view axis, e.g. to focus on the 3D cursor.

    Reads ``matrix_world``: after moving the camera, call ``view_layer.update()`` first.
    """
    matrix = camera.matrix_world
    view_axis = (matrix.to_3x3() @ Vector((0.0, 0.0, -1.0))).normalized()
    return max(0.0, (Vector(point) - matrix.translation).dot(view_axis))


def oidn_available() -> bool:
    """Whether this Blender build's Cycles has OpenImageDenoise."""
    try:
        import _cycles
    except ImportError:
        return False
    return bool(getattr(_cycles, "with_openimagedenoise", False))


def render_still(
    scene: bpy.types.Scene,
    output_path: str | os.PathLike,
    *,
    width: int,
    height: int,
    samples: int,
    engine: str = "CYCLES",
    seed: int = 0,
    denoise: bool = True,
    view_transform: str = "AgX",
) -> Path:
    """Render the scene camera's view to an 8-bit sRGB PNG at ``output_path``; return it.

    ``engine`` is a render engine id ("CYCLES", or EEVEE's id in this Blender version).
    ``view_transform`` "Standard" (plain sRGB, linear up to white) suits measurements.
    The PNG is written under a temporary name and renamed, so it never appears half-written.
    """
    if scene.camera is None:
        raise ValueError(f"scene {scene.name!r} has no camera")
    if width < 1 or height < 1 or samples < 1:
        raise ValueError(f"bad render size or samples: {width}x{height}, {samples} samples")
    _configure_output(scene, width, height, view_transform)
    scene.render.engine = engine
    if engine == "CYCLES":
        _configure_cycles(scene, samples, seed, denoise)
    else:
        scene.eevee.taa_render_samples = samples
    target = Path(output_path).absolute()
    fd, temporary = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".part.png", dir=target.parent)
    os.close(fd)
    try:
        scene.render.filepath = temporary
        bpy.ops.render.render(write_still=True, scene=scene.name)
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
    return target


def _configure_output(scene: bpy.types.Scene, width: int, height: int, view_transform: str) -> None:
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.use_file_extension = False
    render.film_transparent = False
    settings = render.image_settings
    settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGB", "8"
    scene.display_settings.display_device = "sRGB"
    view = scene.view_settings
    view.view_transform, view.look, view.exposure, view.gamma = view_transform, "None", 0.0, 1.0


def _configure_cycles(scene: bpy.types.Scene, samples: int, seed: int, denoise: bool) -> None:
    cycles = scene.cycles
    cycles.device = "CPU"
    cycles.samples = samples
    cycles.seed = seed
    cycles.use_animated_seed = False
    cycles.use_denoising = denoise and oidn_available()
    if cycles.use_denoising:
        cycles.denoiser = "OPENIMAGEDENOISE"
        cycles.denoising_use_gpu = False
    # Lookdev needs no deep paths or caustics; fewer bounces keep small stills fast.
    cycles.max_bounces, cycles.diffuse_bounces, cycles.glossy_bounces = 4, 2, 3
    cycles.caustics_reflective = cycles.caustics_refractive = False


def _ensure_collection(scene: bpy.types.Scene) -> bpy.types.Collection:
    collection = bpy.data.collections.get(COLLECTION) or bpy.data.collections.new(COLLECTION)
    if collection.name not in scene.collection.children:
        scene.collection.children.link(collection)
    return collection


def _ensure_object(collection: bpy.types.Collection, name: str) -> bpy.types.Object:
    """The named mesh object with its named material, created once and put in its place."""
    make_mesh, location, rotation_z = _OBJECTS[name]
    obj = bpy.data.objects.get(name)
    if obj is None:
        obj = bpy.data.objects.new(name, make_mesh(name))
        obj.data.materials.append(_ensure_material(name))
    if obj.name not in collection.objects:
        collection.objects.link(obj)
    obj.location = location
    obj.rotation_euler = (0.0, 0.0, math.radians(rotation_z))
    return obj


def _ensure_material(name: str) -> bpy.types.Material:
    material = bpy.data.materials.get(name)
    if material is None:
        material = bpy.data.materials.new(name)
        material.use_nodes = True
        bsdf = material.node_tree.nodes["Principled BSDF"]
        for socket, value in _MATERIALS[name].items():
            bsdf.inputs[socket].default_value = value
    return material


def _mesh_from(name: str, build) -> bpy.types.Mesh:
    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    try:
        build(bm)
        bm.to_mesh(mesh)
    finally:
        bm.free()
    return mesh


def _sphere_mesh(name: str) -> bpy.types.Mesh:
    mesh = _mesh_from(
        name, lambda bm: bmesh.ops.create_uvsphere(bm, u_segments=64, v_segments=32, radius=SPHERE_RADIUS)
    )
    mesh.shade_smooth()
    return mesh


def _cube_mesh(name: str) -> bpy.types.Mesh:
    return _mesh_from(name, lambda bm: bmesh.ops.create_cube(bm, size=0.7))


def _grid_mesh(name: str) -> bpy.types.Mesh:
    return _mesh_from(name, lambda bm: bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=6.0))


# name -> (mesh builder, location, rotation about Z in degrees)
_OBJECTS = {
    GROUND: (_grid_mesh, (0.0, 0.0, 0.0), 0.0),
    GREY_SPHERE: (_sphere_mesh, (-1.1, 0.0, SPHERE_RADIUS), 0.0),
    CHROME_SPHERE: (_sphere_mesh, (0.0, 0.0, SPHERE_RADIUS), 0.0),
    COLOUR_CUBE: (_cube_mesh, (1.1, 0.0, 0.35), 30.0),
}
