"""hdr.projection against Blender itself: Cycles renders of a world lit by an equirect image.

The world is Environment Texture (Linear, Non-Color) -> Background -> World Output; a camera at
the origin renders it to a float EXR, which must equal ``equirect_to_perspective`` of the same
image with the same angles. The camera is built from Blender's own terms (see the module
docstring of ``projection``): Euler XYZ (90° + pitch, 0, yaw − 90°), then a rotation of ``roll``
about its local Z axis, horizontal sensor fit, ``angle`` = the horizontal FOV.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lediff_backend.hdr.projection import (
    direction_to_uv,
    equirect_to_perspective,
    perspective_directions,
    sample_equirect,
)

pytestmark = pytest.mark.blender

ENV_HEIGHT, ENV_WIDTH = 32, 64
# Cycles jitters each camera ray within its pixel filter (width 0.01 px): on a map of random
# colours this leaves mean differences of 0.5-1.5e-4 and single pixels up to ~0.012.
MEAN_ATOL = 5e-4
MAX_ATOL = 0.03


@pytest.fixture(scope="module")
def bpy(tmp_path_factory):
    """Blender as a module, with its user resources in a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BLENDER_USER_RESOURCES", str(tmp_path_factory.mktemp("blender_user")))
        try:
            import bpy
        except ImportError:
            pytest.fail("the bpy wheel is not installed: run ./dev test, which installs it")
        yield bpy


@pytest.fixture(scope="module")
def environment() -> np.ndarray:
    """Distinctive random colours, row 0 at the top."""
    return np.random.default_rng(7).random((ENV_HEIGHT, ENV_WIDTH, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def render(bpy, environment, tmp_path_factory):
    """A function (width, height, camera setup) -> the rendered RGB, row 0 at the top."""
    import OpenEXR

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    _build_world(bpy, scene, environment)
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    _configure_render(scene)
    path = str(tmp_path_factory.mktemp("renders") / "render.exr")

    def run(width: int, height: int, setup) -> np.ndarray:
        setup(camera)
        scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.render.filepath = path
        bpy.ops.render.render(write_still=True)
        with OpenEXR.File(path) as exr:
            return np.array(exr.channels()["RGBA"].pixels[..., :3], np.float32)

    return run


def _build_world(bpy, scene, environment: np.ndarray) -> None:
    image = bpy.data.images.new("environment", ENV_WIDTH, ENV_HEIGHT, alpha=False, float_buffer=True)
    image.colorspace_settings.name = "Non-Color"
    rgba = np.ones((ENV_HEIGHT, ENV_WIDTH, 4), np.float32)
    rgba[..., :3] = environment
    image.pixels.foreach_set(rgba[::-1].ravel())  # Blender images have row 0 at the bottom
    world = bpy.data.worlds.new("World")
    scene.world = world
    world.use_nodes = True
    world.cycles.sampling_method = "NONE"  # no importance map: the render starts at once
    nodes, links = world.node_tree.nodes, world.node_tree.links
    nodes.clear()
    texture = nodes.new("ShaderNodeTexEnvironment")
    texture.image = image
    texture.interpolation = "Linear"
    background = nodes.new("ShaderNodeBackground")
    output = nodes.new("ShaderNodeOutputWorld")
    links.new(texture.outputs["Color"], background.inputs["Color"])
    links.new(background.outputs["Background"], output.inputs["Surface"])


def _configure_render(scene) -> None:
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.cycles.filter_width = 0.01
    scene.view_settings.view_transform = "Standard"
    scene.render.film_transparent = False
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_depth = "32"


def pinhole(fov_deg: float, yaw_deg: float, pitch_deg: float, roll_deg: float):
    """Set up a Blender perspective camera for our (yaw, pitch, roll) convention."""
    from mathutils import Euler, Matrix

    def setup(camera) -> None:
        camera.data.type = "PERSP"
        camera.data.sensor_fit = "HORIZONTAL"
        camera.data.angle = math.radians(fov_deg)
        aim = Euler((math.radians(90 + pitch_deg), 0.0, math.radians(yaw_deg - 90)), "XYZ")
        camera.rotation_euler = (aim.to_matrix() @ Matrix.Rotation(math.radians(roll_deg), 3, "Z")).to_euler("XYZ")

    return setup


def away_from_poles(v: np.ndarray) -> np.ndarray:
    """Where v lies between the centres of the map's first and last rows.

    Cycles wraps v as well as u, so within half a pixel of a pole it blends in the far row
    of the image; we repeat the edge row instead.
    """
    rows = (1 - v) * ENV_HEIGHT - 0.5
    return (rows >= 0) & (rows <= ENV_HEIGHT - 1)


def _assert_close(rendered: np.ndarray, ours: np.ndarray, keep: np.ndarray | None = None) -> None:
    difference = np.abs(rendered - ours)
    if keep is not None:
        difference = difference[keep]
    assert difference.mean() < MEAN_ATOL, f"mean abs difference {difference.mean():.2e}"
    assert difference.max() < MAX_ATOL, f"max abs difference {difference.max():.2e}"
    mirrored = np.abs(rendered[::-1] - ours).mean()
    assert mirrored > 50 * difference.mean()  # the comparison can tell a flipped image apart


@pytest.mark.parametrize(
    ("yaw", "pitch", "roll", "fov"),
    [
        (0, 0, 0, 60),  # +X: the panorama centre
        (180, 0, 0, 60),  # -X: across the seam
        (90, 0, 0, 60),  # +Y
        (-90, 0, 0, 50),  # -Y
        (30, 40, 0, 60),  # tilted up
        (-120, -35, 0, 75),  # tilted down
        (45, 10, 30, 60),  # rolled
        (-150, -20, -60, 90),  # rolled the other way, tilted down
    ],
)
def test_perspective_matches_blender(render, environment, yaw, pitch, roll, fov):
    width, height = 32, 24
    rendered = render(width, height, pinhole(fov, yaw, pitch, roll))
    _assert_close(rendered, equirect_to_perspective(environment, width, height, fov, yaw, pitch, roll))


@pytest.mark.parametrize("pitch", [90, -90])
def test_looking_at_a_pole_matches_blender_away_from_it(render, environment, pitch):
    """Equal except within half a map pixel of the pole (see ``away_from_poles``)."""
    width, height, fov = 32, 24, 60
    rendered = render(width, height, pinhole(fov, 20, pitch, 0))
    _, v = direction_to_uv(perspective_directions(width, height, fov, 20, pitch, 0))
    keep = away_from_poles(v)
    assert 0.5 < keep.mean() < 1
    _assert_close(rendered, equirect_to_perspective(environment, width, height, fov, 20, pitch, 0), keep)


def test_equirect_camera_matches_the_map(render, environment):
    """Blender's equirectangular panoramic camera, aimed like our yaw = pitch = roll = 0
    camera, sees the world map with our u, v and pixel centres. (80x40 pixels: their centres
    never meet the map's texel centres, where the tiny pixel filter would average across the
    kink of bilinear interpolation.) The rows nearest the poles are left out, see
    ``away_from_poles``."""

    def setup(camera) -> None:
        pinhole(90, 0, 0, 0)(camera)
        camera.data.type = "PANO"
        camera.data.panorama_type = "EQUIRECTANGULAR"

    width, height = 80, 40
    rendered = render(width, height, setup)
    u = (np.arange(width) + 0.5) / width
    v = 1 - (np.arange(height) + 0.5) / height
    keep = np.broadcast_to(away_from_poles(v)[:, None], (height, width))
    _assert_close(rendered, sample_equirect(environment, u[None, :], v[:, None]), keep)
