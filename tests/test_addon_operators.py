"""The add-on's operators on real maps: apply_world / open_hdri and the World controls, 64x64
Cycles renders, add_sun on a map with a known sun (checked by Blender's own rendering too), and
lookdev_render. Each test starts from factory settings with the add-on enabled.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from lediff_backend.hdr.exr import write_exr
from lediff_backend.hdr.projection import equirect_directions, solid_angle_weights
from tests.addon_support import addon_session, configure, fresh_addon

pytestmark = pytest.mark.blender

SUN_AZIMUTH, SUN_ELEVATION, SUN_RADIUS = 40.0, 25.0, 1.0  # degrees
SUN_RGB = np.array([1.0, 0.85, 0.7], np.float32) * 3000.0


@pytest.fixture(scope="module", autouse=True)
def _session():
    with addon_session():
        yield


@pytest.fixture
def bpy(tmp_path):
    bpy = fresh_addon()
    configure(bpy, output_dir=str(tmp_path / "results"))
    return bpy


def _direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


@pytest.fixture(scope="module")
def sun_map(tmp_path_factory):
    """A 1024x512 sky (blue above, grey below) with a 2° sun at a known place; its excess irradiance."""
    height, width = 512, 1024
    directions = equirect_directions(height, width)
    up = np.clip(directions[..., 2:3], 0.0, 1.0)
    sky = (0.4 + 0.6 * up) * np.array([0.55, 0.75, 1.0], np.float32)
    sky = np.where(directions[..., 2:3] < 0, 0.3, sky).astype(np.float32)
    cosine = directions @ _direction(SUN_AZIMUTH, SUN_ELEVATION)
    disc = cosine > math.cos(math.radians(SUN_RADIUS))
    pixels = sky.copy()
    pixels[disc] = SUN_RGB
    omega = np.broadcast_to(np.asarray(solid_angle_weights(height, width)).reshape(height, -1)[:, :1], (height, width))
    excess = ((pixels - sky)[disc] * (omega[disc] * cosine[disc])[:, None]).sum(axis=0)
    path = tmp_path_factory.mktemp("maps") / "known_sun.exr"
    write_exr(path, pixels, latlong=True)
    return path, excess


def _render(bpy, path, *, samples=4, width=64, height=64) -> np.ndarray:
    """The scene camera's view as linear RGB floats (Standard view transform, no denoising)."""
    from lediff_blender import lookdev

    lookdev.render_still(bpy.context.scene, path, width=width, height=height, samples=samples,
                         view_transform="Standard", denoise=False)
    encoded = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


def _lookdev(bpy):
    from lediff_blender import lookdev

    lookdev.build_lookdev_scene(bpy.context.scene)
    lookdev.ensure_camera(bpy.context.scene)


# apply_world / open_hdri and the World controls --------------------------------------------------


def test_apply_world_builds_the_graph_and_controls_drive_it(bpy, studiolights):
    from lediff_blender import world as lw

    path = str(studiolights["sunrise"])
    assert bpy.ops.lediff.open_hdri(filepath=path) == {"FINISHED"}
    world = bpy.context.scene.world
    nodes = world.node_tree.nodes
    assert set(lw.NODE_NAMES) <= set(nodes.keys())
    chain = [lw.COORDINATES, lw.MAPPING, lw.ENVIRONMENT, lw.LIGHT, lw.CAMERA_MIX, lw.OUTPUT]
    for source, target in zip(chain, chain[1:]):
        assert any(link.from_node.name == source for link in _inputs_links(nodes[target])), (source, target)
    assert nodes[lw.ENVIRONMENT].image.filepath == path  # the file itself, not a copy
    assert nodes[lw.OUTPUT].is_active_output

    controls = world.lediff
    controls.ev, controls.rotation = 1.5, -75.0  # property updates write the nodes at once
    assert nodes[lw.LIGHT].inputs["Strength"].default_value == pytest.approx(2**1.5)
    assert tuple(nodes[lw.MAPPING].inputs["Rotation"].default_value) == pytest.approx((0, 0, math.radians(-75)))
    controls.background_separate, controls.background_ev = True, -2.0
    assert nodes[lw.BACKGROUND].inputs["Strength"].default_value == pytest.approx(0.25)
    assert nodes[lw.LIGHT].inputs["Strength"].default_value == pytest.approx(2**1.5)

    count = len(nodes)
    assert bpy.ops.lediff.apply_world(index=0) == {"FINISHED"}  # re-apply: same nodes, settings kept
    assert len(nodes) == count
    assert nodes[lw.LIGHT].inputs["Strength"].default_value == pytest.approx(2**1.5)
    assert len(bpy.context.scene.lediff.history) == 1


def _inputs_links(node):
    return [link for socket in node.inputs for link in socket.links]


def test_open_hdri_refuses_bad_files_and_keeps_the_world(bpy, studiolights, tmp_path):
    from lediff_blender import world as lw

    bpy.ops.lediff.open_hdri(filepath=str(studiolights["forest"]))
    world = bpy.context.scene.world
    broken = tmp_path / "broken.exr"
    broken.write_bytes(b"\x76\x2f\x31\x01" + b"\0garbage" * 64)
    for path, message in ((tmp_path / "photo.png", "Not an HDR file"), (broken, "cannot"),
                          (tmp_path / "missing.exr", "no such file")):
        with pytest.raises(RuntimeError, match=message):
            bpy.ops.lediff.open_hdri(filepath=str(path))
        assert lw.environment_image(world).filepath == str(studiolights["forest"])
    assert len(bpy.context.scene.lediff.history) == 1


def test_data_changing_operators_are_undo_steps(bpy):
    from lediff_blender import operators

    changing = {"apply_world", "open_hdri", "add_sun", "remove_sun", "bracket_add", "bracket_remove"}
    for cls in operators.classes:
        assert ("UNDO" in getattr(cls, "bl_options", set())) == (cls.bl_idname.split(".")[1] in changing), cls


# Renders ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_renders_double_with_one_ev_and_change_with_rotation(bpy, studiolights, tmp_path):
    _lookdev(bpy)
    bpy.ops.lediff.open_hdri(filepath=str(studiolights["courtyard"]))  # no sun to clip
    controls = bpy.context.scene.world.lediff
    controls.background_visible, controls.ev = False, -1.0  # only light from the map counts
    base = _render(bpy, tmp_path / "ev-1.png")
    controls.ev = 0.0
    brighter = _render(bpy, tmp_path / "ev0.png")
    print(f"mean linear brightness {base.mean():.4f} -> {brighter.mean():.4f}")
    assert 0.02 < base.mean() < 0.3
    assert brighter.mean() / base.mean() == pytest.approx(2.0, rel=0.1)
    controls.rotation = 120.0
    turned = _render(bpy, tmp_path / "r120.png")
    assert np.abs(turned - brighter).mean() > 0.1 * brighter.mean()


# add_sun ----------------------------------------------------------------------------------------


def _lamp_direction(lamp) -> np.ndarray:
    from mathutils import Vector

    return np.array(lamp.rotation_euler.to_matrix() @ Vector((0.0, 0.0, 1.0)))  # a sun shines along -Z


def _angle_deg(a, b) -> float:
    return math.degrees(math.acos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


def test_add_sun_finds_a_known_sun_and_follows_the_world(bpy, sun_map):
    from lediff_blender import sun_lamp

    path, excess = sun_map
    bpy.ops.lediff.open_hdri(filepath=str(path))
    controls = bpy.context.scene.world.lediff
    controls.rotation = 30.0  # the map turns by +30°: its sun appears 30° clockwise of where it was
    assert bpy.ops.lediff.add_sun(remove_from_map=False) == {"FINISHED"}
    lamp = bpy.data.objects[sun_lamp.SUN_OBJECT]
    assert lamp.data.type == "SUN" and math.degrees(lamp.data.angle) == pytest.approx(0.53, abs=1e-3)
    expected = _direction(SUN_AZIMUTH - 30.0, SUN_ELEVATION)
    assert _angle_deg(_lamp_direction(lamp), expected) < 2.0
    light = np.array(lamp.data.color) * lamp.data.energy
    np.testing.assert_allclose(light, excess, rtol=0.05)  # color x strength = the sun's irradiance

    controls.ev, controls.rotation = 1.0, -20.0
    assert lamp.data.energy == pytest.approx(2 * excess.max(), rel=0.05)
    assert _angle_deg(_lamp_direction(lamp), _direction(SUN_AZIMUTH + 20.0, SUN_ELEVATION)) < 2.0
    assert not sun_lamp.has_mask(bpy.context.scene.world)


@pytest.mark.slow
def test_sun_direction_agrees_with_blenders_own_rendering(bpy, sun_map, tmp_path):
    """A narrow camera aimed along the lamp sees the sun disc of the map in its centre."""
    from mathutils import Vector

    from lediff_blender import sun_lamp

    bpy.ops.lediff.open_hdri(filepath=str(sun_map[0]))
    bpy.context.scene.world.lediff.rotation = 30.0
    bpy.ops.lediff.add_sun(remove_from_map=True)
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Probe", bpy.data.cameras.new("Probe"))
    scene.collection.objects.link(camera)
    camera.data.lens = 18.0 / math.tan(math.radians(5.0))  # 10° field of view on a 36 mm sensor
    camera.rotation_euler = Vector(_lamp_direction(bpy.data.objects[sun_lamp.SUN_OBJECT])).to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera
    bpy.context.scene.world.lediff.ev = -3.0  # sky dark, sun still white
    image = _render(bpy, tmp_path / "probe.png", samples=1, width=21, height=21).mean(axis=2)
    rows, columns = np.nonzero(image > 0.9)
    assert len(rows) > 0
    assert abs(rows.mean() - 10) < 1.0 and abs(columns.mean() - 10) < 1.0  # 1 px = 0.5°


@pytest.mark.slow
def test_sun_taken_from_the_map_is_not_counted_twice(bpy, sun_map, tmp_path):
    _lookdev(bpy)
    bpy.ops.lediff.open_hdri(filepath=str(sun_map[0]))
    controls = bpy.context.scene.world.lediff
    controls.background_visible, controls.ev = False, -3.0
    in_map = _render(bpy, tmp_path / "map.png", samples=16)
    bpy.ops.lediff.add_sun(remove_from_map=True)
    lamp = _render(bpy, tmp_path / "lamp.png", samples=16)
    print(f"mean linear brightness: sun in the map {in_map.mean():.4f}, sun lamp {lamp.mean():.4f}")
    assert lamp.mean() == pytest.approx(in_map.mean(), rel=0.1)
    bpy.ops.lediff.remove_sun()
    assert bpy.data.objects.get("LEDiff Sun") is None


def test_add_sun_needs_a_map_and_a_compact_sun(bpy, tmp_path):
    with pytest.raises(RuntimeError, match="Apply an environment"):
        bpy.ops.lediff.add_sun()
    overcast = tmp_path / "overcast.exr"
    up = equirect_directions(64, 128)[..., 2:3]
    write_exr(overcast, np.repeat(1.0 + 0.2 * np.clip(up, 0, 1), 3, axis=2).astype(np.float32), latlong=True)
    bpy.ops.lediff.open_hdri(filepath=str(overcast))  # its brightest light is the whole zenith
    assert bpy.ops.lediff.add_sun() == {"CANCELLED"}
    assert bpy.data.objects.get("LEDiff Sun") is None


# lookdev_render ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_lookdev_render_focuses_saves_and_keeps_render_settings(bpy, studiolights, tmp_path):
    from lediff_blender import lookdev

    scene = bpy.context.scene
    bpy.ops.lediff.open_hdri(filepath=str(studiolights["sunset"]))
    settings = scene.lediff
    settings.resolution, settings.samples, settings.focus, settings.fstop = 64, 2, "CURSOR", 4.0
    scene.cursor.location = (0.0, 0.0, 0.5)
    resolution, engine = scene.render.resolution_x, scene.render.engine
    assert bpy.ops.lediff.lookdev_render() == {"FINISHED"}

    camera = scene.camera
    assert camera is not None and camera.data.dof.use_dof and camera.data.dof.aperture_fstop == 4.0
    assert camera.data.dof.focus_distance == pytest.approx(lookdev.focus_distance_to(camera, (0, 0, 0.5)), abs=1e-3)
    assert bpy.data.objects.get(lookdev.CHROME_SPHERE) is not None
    (render,) = list((tmp_path / "results").glob("lookdev_*.png"))
    assert Image.open(render).size == (64, 36)
    assert any(image.filepath == str(render) for image in bpy.data.images)
    assert (scene.render.resolution_x, scene.render.engine) == (resolution, engine)
    assert list(bpy.data.scenes) == [scene]


# Creating the backend environment ---------------------------------------------------------------


def test_create_backend_env_needs_online_access(bpy):
    assert not bpy.app.online_access  # bpy's module mode is offline
    with pytest.raises(RuntimeError, match="Blender is offline"):
        bpy.ops.lediff.create_backend_env()


def test_backend_env_plan_installs_torch_first_then_the_backend(tmp_path):
    from lediff_blender import backend_env

    wheel = str(tmp_path / "lediff_backend-0.1.0-py3-none-any.whl")
    steps = backend_env.plan(str(tmp_path / "env"), "cu126", wheel, python="/usr/bin/python3")
    python = backend_env.venv_python(str(tmp_path / "env"))
    assert steps[0].command == ("/usr/bin/python3", "-m", "venv", str(tmp_path / "env"))
    torch, backend = steps[2].command, steps[3].command
    assert torch[0] == python and "torch" in torch and torch[-1] == "https://download.pytorch.org/whl/cu126"
    assert backend[-1] == f"{wheel}[neural]" and "-e" not in backend
    assert "-e" in backend_env.plan(str(tmp_path / "env"), "cpu", str(tmp_path))[3].command  # a checkout
    with pytest.raises(ValueError, match="unknown torch build"):
        backend_env.plan(str(tmp_path), "rocm", wheel)


def _python_step(title: str, code: str):
    import sys

    from lediff_blender.backend_env import Step

    return Step(title, (sys.executable, "-c", code))


def test_backend_env_builder_reports_progress_log_and_failure(tmp_path):
    from lediff_blender.backend_env import Builder

    builder = Builder([_python_step("First", "print('one')"),
                       _python_step("Second", "import sys; print('two'); sys.exit(4)"),
                       _python_step("Never", "print('three')")], str(tmp_path / "log" / "create.log")).start()
    assert builder.finished.wait(30)
    assert builder.step == 1 and builder.fraction == pytest.approx(1 / 3)
    assert builder.error.startswith("Second failed (status 4)") and builder.title == builder.error
    tail = builder.log_tail()
    assert "one" in tail and "two" in tail and "three" not in tail

    done = Builder([_python_step("Only", "print('ok')")], str(tmp_path / "ok.log")).start()
    assert done.finished.wait(30) and done.error is None and done.title == "Done" and done.fraction == 1.0


def test_backend_env_builder_cancels_a_running_step(tmp_path):
    import time

    from lediff_blender.backend_env import Builder

    builder = Builder([_python_step("Slow", "import time; time.sleep(60)")], str(tmp_path / "create.log")).start()
    time.sleep(0.3)
    builder.cancel()
    assert builder.finished.wait(10) and builder.error == "Cancelled"
