"""World lighting nodes (lediff_blender.world) on a real studio light EXR, checked in bpy.

Graph checks read the node tree; render checks make 64x64 Cycles stills with the lookdev scene.
bpy state is process-global, so every test starts from Blender's empty factory settings.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import uniform_filter

pytestmark = pytest.mark.blender


@pytest.fixture
def bpy(tmp_path_factory):
    """The bpy module, reset to an empty scene with a fresh world."""
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(tmp_path_factory.mktemp("blender_user")))
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.world = bpy.data.worlds.new("Test World")
    return bpy


@pytest.fixture
def world(bpy):
    return bpy.context.scene.world


def _linked(node_input) -> list[tuple[str, str]]:
    """(node name, socket name) of whatever feeds ``node_input``."""
    return [(link.from_node.name, link.from_socket.name) for link in node_input.links]


def _only_source(node_input):
    (link,) = node_input.links
    return link.from_node


def test_graph_chain_from_coordinates_to_output(world, studiolights):
    from lediff_blender import world as lw

    lw.apply_environment(world, studiolights["sunrise"], ev=1.5, rotation_deg=30.0)
    nodes = world.node_tree.nodes

    output = nodes[lw.OUTPUT]
    assert output.is_active_output
    camera_mix = _only_source(output.inputs["Surface"])
    assert camera_mix.bl_idname == "ShaderNodeMixShader"
    assert _linked(camera_mix.inputs["Fac"]) == [(lw.LIGHT_PATH, "Is Camera Ray")]
    light = _only_source(camera_mix.inputs[1])
    assert light.bl_idname == "ShaderNodeBackground"
    environment = _only_source(light.inputs["Color"])
    assert environment.bl_idname == "ShaderNodeTexEnvironment"
    mapping = _only_source(environment.inputs["Vector"])
    assert mapping.bl_idname == "ShaderNodeMapping"
    assert _linked(mapping.inputs["Vector"]) == [(lw.COORDINATES, "Generated")]
    assert nodes[lw.COORDINATES].bl_idname == "ShaderNodeTexCoord"

    # The file itself, not a copy.
    assert os.path.samefile(environment.image.filepath, studiolights["sunrise"])
    assert environment.image.packed_file is None
    assert nodes[lw.BACKGROUND_ENVIRONMENT].image == environment.image


def test_camera_branch_has_its_own_background(world, studiolights):
    from lediff_blender import world as lw

    lw.apply_environment(world, studiolights["sunrise"], background_ev=-2.0, background_blur=0.1)
    nodes = world.node_tree.nodes
    visibility = _only_source(nodes[lw.CAMERA_MIX].inputs[2])
    assert not visibility.inputs[1].is_linked  # black when hidden
    background = _only_source(visibility.inputs[2])
    assert background.name == lw.BACKGROUND
    assert background.inputs["Strength"].default_value == pytest.approx(0.25)
    assert _only_source(background.inputs["Color"]).name == lw.BACKGROUND_ENVIRONMENT


def test_strength_and_rotation(world, studiolights):
    from lediff_blender import world as lw

    lw.apply_environment(world, studiolights["city"], ev=2.5, rotation_deg=-75.0)
    nodes = world.node_tree.nodes
    assert nodes[lw.LIGHT].inputs["Strength"].default_value == pytest.approx(2**2.5)
    assert nodes[lw.BACKGROUND].inputs["Strength"].default_value == pytest.approx(2**2.5)
    rotation = nodes[lw.MAPPING].inputs["Rotation"].default_value
    assert tuple(rotation) == pytest.approx((0.0, 0.0, math.radians(-75.0)))


def test_reapply_reuses_nodes(world, studiolights, bpy):
    from lediff_blender import world as lw

    lw.apply_environment(world, studiolights["sunrise"], ev=1.0)
    tree = world.node_tree
    pointers = {node.name: node.as_pointer() for node in tree.nodes}
    link_count = len(tree.links)
    images = len(bpy.data.images)

    lw.apply_environment(world, studiolights["sunrise"], ev=-1.0, rotation_deg=90.0, background_blur=0.2)
    assert {node.name: node.as_pointer() for node in tree.nodes} == pointers
    assert len(tree.links) == link_count
    assert len(bpy.data.images) == images  # same file -> same image

    lw.apply_environment(world, studiolights["forest"])
    assert len(tree.nodes) == len(pointers)
    assert os.path.samefile(lw.environment_image(world).filepath, studiolights["forest"])


def test_update_world_settings_changes_values_in_place(world, studiolights):
    from lediff_blender import world as lw

    lw.apply_environment(world, studiolights["sunrise"])
    nodes = world.node_tree.nodes
    node_count = len(nodes)

    lw.update_world_settings(world, ev=1.0, rotation_deg=45.0)
    assert nodes[lw.LIGHT].inputs["Strength"].default_value == pytest.approx(2.0)
    assert nodes[lw.BACKGROUND].inputs["Strength"].default_value == pytest.approx(2.0)  # follows ev
    assert nodes[lw.MAPPING].inputs["Rotation"].default_value[2] == pytest.approx(math.radians(45.0))

    lw.update_world_settings(world, background_ev=-1.0, background_visible=False)
    assert nodes[lw.LIGHT].inputs["Strength"].default_value == pytest.approx(2.0)
    assert nodes[lw.BACKGROUND].inputs["Strength"].default_value == pytest.approx(0.5)
    assert nodes[lw.VISIBILITY].inputs["Fac"].default_value == 0.0

    settings = lw.update_world_settings(world, ev=3.0, background_blur=0.05)
    assert settings == lw.EnvironmentSettings(
        ev=pytest.approx(3.0),
        rotation_deg=pytest.approx(45.0),
        background_visible=False,
        background_ev=pytest.approx(-1.0),
        background_blur=pytest.approx(0.05),
    )
    assert lw.read_world_settings(world) == settings
    assert len(nodes) == node_count


def test_update_before_apply_and_unknown_setting_fail(world, studiolights):
    from lediff_blender import world as lw

    with pytest.raises(LookupError):
        lw.update_world_settings(world, ev=1.0)
    lw.apply_environment(world, studiolights["sunrise"])
    with pytest.raises(TypeError):
        lw.update_world_settings(world, exposure=1.0)


def test_clear_environment_restores_other_output(world, studiolights):
    from lediff_blender import world as lw

    world.use_nodes = True  # Blender's default Background -> World Output
    (original_output,) = [node for node in world.node_tree.nodes if node.bl_idname == "ShaderNodeOutputWorld"]
    lw.apply_environment(world, studiolights["sunrise"])
    assert not original_output.is_active_output
    lw.clear_environment(world)
    assert not any(node.name.startswith("LEDiff") for node in world.node_tree.nodes)
    assert original_output.is_active_output
    assert lw.read_world_settings(world) is None


def test_missing_file(world, tmp_path):
    from lediff_blender import world as lw

    with pytest.raises(FileNotFoundError):
        lw.apply_environment(world, tmp_path / "nope.exr")


# --- renders -------------------------------------------------------------------------------


def _render(bpy, path, *, samples=4, view_transform="Standard") -> np.ndarray:
    """A 64x64 still of the lookdev scene; linear RGB (sRGB decoded) as float."""
    from lediff_blender import lookdev

    scene = bpy.context.scene
    lookdev.render_still(
        scene, path, width=64, height=64, samples=samples, denoise=False, view_transform=view_transform
    )
    encoded = np.asarray(Image.open(path), dtype=np.float64) / 255.0
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


@pytest.fixture
def lookdev_scene(bpy):
    from lediff_blender import lookdev

    scene = bpy.context.scene
    lookdev.build_lookdev_scene(scene)
    lookdev.ensure_camera(scene)
    return scene


@pytest.mark.slow
def test_one_ev_doubles_render_brightness(bpy, lookdev_scene, studiolights, tmp_path):
    from lediff_blender import world as lw

    # Courtyard has no sun to clip; the camera sees black, so only light from the map counts.
    lw.apply_environment(lookdev_scene.world, studiolights["courtyard"], ev=0.0, background_visible=False)
    base = _render(bpy, tmp_path / "ev0.png").mean()
    lw.update_world_settings(lookdev_scene.world, ev=1.0)
    brighter = _render(bpy, tmp_path / "ev1.png").mean()
    print(f"mean linear brightness {base:.4f} -> {brighter:.4f}")
    assert 0.02 < base < 0.3
    assert brighter / base == pytest.approx(2.0, rel=0.1)


@pytest.mark.slow
def test_rotation_changes_render(bpy, lookdev_scene, studiolights, tmp_path):
    from lediff_blender import world as lw

    lw.apply_environment(lookdev_scene.world, studiolights["sunrise"], ev=-3.0)
    before = _render(bpy, tmp_path / "r0.png", view_transform="AgX")
    lw.update_world_settings(lookdev_scene.world, rotation_deg=120.0)
    after = _render(bpy, tmp_path / "r120.png", view_transform="AgX")
    assert np.abs(after - before).mean() > 0.2 * before.mean()


@pytest.mark.slow
def test_background_blur_smooths_the_background(bpy, studiolights, tmp_path):
    from lediff_blender import lookdev
    from lediff_blender import world as lw

    scene = bpy.context.scene
    lookdev.ensure_camera(scene)  # no objects: the camera sees the background alone
    lw.apply_environment(scene.world, studiolights["forest"], ev=-1.0)
    sharp = _render(bpy, tmp_path / "sharp.png", samples=32)
    lw.update_world_settings(scene.world, background_blur=0.1)
    blurred = _render(bpy, tmp_path / "blurred.png", samples=32)

    # The sharp map's fine structure (what a 9 px box filter removes) should fade from the
    # blurred render; sampling grain is uncorrelated with it, so it averages out of the ratio.
    fine = sharp - uniform_filter(sharp, size=(9, 9, 1))
    kept = np.sum((blurred - uniform_filter(blurred, size=(9, 9, 1))) * fine) / np.sum(fine * fine)
    print(f"fine structure kept by the blur: {kept:.2f}")
    assert kept < 0.5
    assert blurred.mean() == pytest.approx(sharp.mean(), rel=0.15)
