"""Lookdev scene, camera, depth of field and stills (lediff_blender.lookdev) in bpy."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.blender


@pytest.fixture
def scene(tmp_path_factory):
    """An empty scene lit by a studio light, with the lookdev objects and camera."""
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(tmp_path_factory.mktemp("blender_user")))
    import bpy

    from lediff_backend.sample_data import studiolight_path
    from lediff_blender import lookdev, world

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.world = bpy.data.worlds.new("Test World")
    world.apply_environment(scene.world, studiolight_path("city"), ev=-2.0)
    lookdev.build_lookdev_scene(scene)
    lookdev.ensure_camera(scene)
    return scene


def test_building_again_reuses_objects(scene):
    import bpy

    from lediff_blender import lookdev

    counts = (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.materials))
    objects = lookdev.build_lookdev_scene(scene)
    lookdev.ensure_camera(scene)
    assert (len(bpy.data.objects), len(bpy.data.meshes), len(bpy.data.materials)) == counts
    assert objects.chrome_sphere.active_material.node_tree.nodes["Principled BSDF"].inputs["Metallic"].default_value == 1.0
    assert lookdev.build_lookdev_scene(scene, spheres=False).grey_sphere is None


def test_depth_of_field_on_an_object_or_a_point(scene):
    from lediff_blender import lookdev

    camera = scene.camera
    chrome = scene.objects[lookdev.CHROME_SPHERE]
    lookdev.set_depth_of_field(camera, fstop=2.8, focus_object=chrome)
    assert camera.data.dof.use_dof and camera.data.dof.aperture_fstop == pytest.approx(2.8)
    assert camera.data.dof.focus_object == chrome

    scene.view_layers[0].update()
    distance = lookdev.focus_distance_to(camera, chrome.location)
    assert distance == pytest.approx((chrome.location - camera.location).length, rel=0.02)
    lookdev.set_depth_of_field(camera, fstop=8.0, focus_distance=distance)
    assert camera.data.dof.focus_object is None and camera.data.dof.focus_distance == pytest.approx(distance)

    lookdev.set_depth_of_field(camera, fstop=None)
    assert not camera.data.dof.use_dof
    with pytest.raises(ValueError):
        lookdev.set_depth_of_field(camera, fstop=0.0)


@pytest.mark.slow
def test_still_is_a_png_of_the_size_asked_and_deterministic(scene, tmp_path):
    from lediff_blender import lookdev

    first = lookdev.render_still(scene, tmp_path / "a.png", width=64, height=48, samples=4, denoise=False)
    second = lookdev.render_still(scene, tmp_path / "b.png", width=64, height=48, samples=4, denoise=False)
    image = Image.open(first)
    assert image.format == "PNG" and image.size == (64, 48) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(second)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temporary left
