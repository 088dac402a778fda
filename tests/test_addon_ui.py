"""The add-on's UI: every panel's draw code, in every mode and job state, against a recording layout.

bpy's module mode registers panels but never draws them, so the tests call ``draw`` themselves
with ``tests.addon_support.RecordingLayout``, which checks every property, operator, UI list and
layout attribute the code names against what bpy really has.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from tests.addon_support import PrefsView, RecordingLayout, addon_session, configure, fresh_addon

pytestmark = pytest.mark.blender

MODES = [("TEXT", True), ("PHOTO", True), ("PHOTO", False), ("BRACKETS", True), ("HDR_FILE", True)]


@pytest.fixture(scope="module", autouse=True)
def _session():
    with addon_session():
        yield


@pytest.fixture
def bpy(tmp_path):
    bpy = fresh_addon()
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"not really a png, but a file")
    settings = bpy.context.scene.lediff
    settings.photo = str(photo)
    for ev in (-2.0, 0.0, 2.0):
        bracket = settings.brackets.add()
        bracket.filepath, bracket.ev = str(photo), ev
    configure(bpy, python_path=sys.executable)
    return bpy


def draw_panel(panel, context) -> RecordingLayout:
    layout = RecordingLayout()
    panel.draw(SimpleNamespace(layout=layout), context)
    return layout


def all_panels():
    from lediff_blender import panels

    return [panels.LEDIFF_PT_world, panels.LEDIFF_PT_sidebar]


@pytest.mark.parametrize("mode, panorama", MODES)
def test_every_panel_draws_every_mode(bpy, mode, panorama):
    settings = bpy.context.scene.lediff
    settings.mode, settings.photo_is_panorama = mode, panorama
    for panel in all_panels():
        layout = draw_panel(panel, bpy.context)
        props, operators = layout.props(), layout.operators()
        assert {"ev", "rotation", "background_blur", "fstop", "focus"} <= set(props)
        assert {"lediff.add_sun", "lediff.lookdev_render"} <= set(operators)
        if mode == "HDR_FILE":
            assert "lediff.generate" not in operators and "seed" not in props
            assert "hdr_file" in props and "lediff.open_hdri" in operators
        elif mode == "BRACKETS":  # a merge keeps the photos' size and has no steps or guidance
            assert "lediff.generate" in operators
            assert {"merge_engine", "response"} <= set(props)
            assert not {"engine", "seed", "steps", "guidance", "width"} & set(props)
        else:
            assert "lediff.generate" in operators
            assert {"engine", "seed", "steps", "guidance", "width"} <= set(props)
            assert not {"merge_engine", "response"} & set(props)
        assert ("prompt" in props) == (mode == "TEXT" or (mode == "PHOTO" and not panorama))
        assert ("photo" in props) == (mode == "PHOTO")
        if mode == "BRACKETS":
            assert [args[0] for args, *_ in layout.find("template_list")][0] == "LEDIFF_UL_brackets"


def test_sun_strength_only_for_a_360_photo(bpy):
    """A 360° photo's convert job takes the sun's strength; off, the EV is greyed out (estimated)."""
    settings = bpy.context.scene.lediff

    def sun_rows():
        return {args[1]: row for args, _, row, _ in draw_panel(all_panels()[0], bpy.context).find("prop")
                if args[1] in ("sun_override", "sun_ev")}

    for mode, panorama in MODES:
        settings.mode, settings.photo_is_panorama = mode, panorama
        assert bool(sun_rows()) == (mode == "PHOTO" and panorama), (mode, panorama)
    settings.mode, settings.photo_is_panorama = "PHOTO", True
    rows = sun_rows()
    assert rows["sun_override"].flag("active") and not rows["sun_ev"].flag("active")
    settings.sun_override = True
    assert sun_rows()["sun_ev"].flag("active")
    settings.engine = "lediff"  # makes its own highlights: the whole row is greyed out
    assert not any(row.flag("active") for row in sun_rows().values())


def test_hdr_file_button_carries_the_file(bpy):
    settings = bpy.context.scene.lediff
    settings.mode, settings.hdr_file = "HDR_FILE", "/maps/beach.exr"
    layout = draw_panel(all_panels()[0], bpy.context)
    assert layout.operators()["lediff.open_hdri"].values == {"filepath": "/maps/beach.exr"}


def test_generate_is_disabled_with_the_reason_shown(bpy):
    configure(bpy, python_path="/nowhere/python")
    layout = draw_panel(all_panels()[1], bpy.context)
    assert not bpy.ops.lediff.generate.poll()
    assert any("does not exist: /nowhere/python" in label for label in layout.labels())


def test_missing_models_disable_text_mode(bpy):
    settings = bpy.context.scene.lediff
    info = bpy.context.window_manager.lediff_backend
    info.checked, info.ok, info.models = True, True, "lediff-highlight"
    settings.mode = "TEXT"
    assert any("Missing models: lediff-shadow, sd-base" in label for label in draw_panel(all_panels()[0], bpy.context).labels())
    assert not bpy.ops.lediff.generate.poll()
    settings.mode, settings.photo_is_panorama = "PHOTO", True  # the classic engine needs none
    assert bpy.ops.lediff.generate.poll()
    settings.engine = "classic"
    seed = [layout for args, _, layout, _ in draw_panel(all_panels()[0], bpy.context).find("prop") if args[1] == "seed"]
    assert not seed[0].flag("active")  # the classic engine has no seed: greyed out


@pytest.mark.parametrize("engine, neural", [("auto", False), ("classic", False), ("gmodiff", True),
                                            ("lfdiff", True)])
def test_brackets_mode_draws_the_merge_settings(bpy, engine, neural):
    settings = bpy.context.scene.lediff
    settings.mode, settings.merge_engine = "BRACKETS", engine
    props = set(draw_panel(all_panels()[0], bpy.context).props())
    assert ("seed" in props) == neural  # only the neural merge engines have a seed
    assert ("response" in props) == (not neural)  # the camera response is the classic engine's
    assert "merge_engine" in props and not {"engine", "width", "steps", "guidance"} & props


def test_brackets_pin_one_reference_photo(bpy):
    from lediff_blender import panels

    settings = bpy.context.scene.lediff
    settings.mode = "BRACKETS"
    assert any("Reference: the middle exposure" in label for label in draw_panel(all_panels()[0], bpy.context).labels())
    brackets = settings.brackets
    brackets[0].reference = True
    brackets[2].reference = True  # pinning one unpins the others
    assert [b.reference for b in brackets] == [False, False, True]
    assert any(label == "Reference: photo.png" for label in draw_panel(all_panels()[1], bpy.context).labels())
    for item in brackets:  # each row has its pin, filled for the reference
        row = RecordingLayout()
        panels.LEDIFF_UL_brackets.draw_item(None, bpy.context, row, settings, item, 0, settings, "bracket_index")
        (pin,) = [kwargs for args, kwargs, _, _ in row.find("prop") if args[1] == "reference"]
        assert pin["icon"] == ("PINNED" if item.reference else "UNPINNED")
    brackets[2].reference = False
    assert not any(b.reference for b in brackets)


@pytest.mark.parametrize("engine, installed, missing", [("gmodiff", "gmodiff", "sd21-base"),
                                                         ("lfdiff", "gmodiff, sd21-base", "lfdiff")])
def test_missing_models_disable_a_neural_merge(bpy, engine, installed, missing):
    settings = bpy.context.scene.lediff
    info = bpy.context.window_manager.lediff_backend
    info.checked, info.ok, info.models = True, True, installed
    settings.mode, settings.merge_engine = "BRACKETS", engine
    assert any(f"Missing models: {missing} " in label for label in draw_panel(all_panels()[0], bpy.context).labels())
    assert not bpy.ops.lediff.generate.poll()
    settings.merge_engine = "classic"  # needs no models
    assert bpy.ops.lediff.generate.poll()


def test_neural_merge_of_two_photos_says_to_add_a_third(bpy):
    settings = bpy.context.scene.lediff
    settings.mode, settings.merge_engine = "BRACKETS", "lfdiff"
    assert bpy.ops.lediff.generate.poll()  # three photos
    settings.brackets.remove(2)
    labels = draw_panel(all_panels()[1], bpy.context).labels()
    assert any(label.startswith("Add at least three bracketed photos: LF-Diff") for label in labels)
    assert not bpy.ops.lediff.generate.poll()
    settings.merge_engine = "auto"  # classic merges two
    assert bpy.ops.lediff.generate.poll()


def test_running_job_shows_progress_preview_and_cancel(bpy, tmp_path):
    from lediff_blender import generation

    preview = tmp_path / "preview.png"
    preview.write_bytes(b"")  # a file; the icon loader makes what it can of it
    state = bpy.context.window_manager.lediff_job
    state.state, state.stage, state.fraction, state.preview = "RUNNING", "denoise", 0.4, str(preview)
    generation._session.job = generation.RunningJob("job-1", "Scene", None, "PHOTO", "photo", str(tmp_path / "o.exr"))
    try:
        for panel, mode in zip(all_panels(), ("PHOTO", "HDR_FILE")):  # shown whatever the mode
            bpy.context.scene.lediff.mode = mode
            layout = draw_panel(panel, bpy.context)
            (_, kwargs, _, _), = layout.find("progress")
            assert kwargs["factor"] == pytest.approx(0.4) and kwargs["text"] == "denoise"
            assert "lediff.cancel" in layout.operators() and "lediff.generate" not in layout.operators()
            (_, icon_kwargs, _, _), = layout.find("template_icon")
            assert isinstance(icon_kwargs["icon_value"], int)
    finally:
        generation._session.job = None


def test_failed_job_message_is_an_alert(bpy):
    state = bpy.context.window_manager.lediff_job
    state.state, state.message = "FAILED", "the backend exited with status 1"
    layout = draw_panel(all_panels()[0], bpy.context)
    (alerted,) = [layout for _, kwargs, layout, _ in layout.find("label") if kwargs.get("text") == state.message]
    assert alerted.flag("alert", default=False)


def test_history_lists_results_with_thumbnails(bpy, tmp_path, studiolights):
    from lediff_blender import lighting, panels

    scene = bpy.context.scene
    lighting.remember(scene, str(studiolights["sunrise"]), mode="HDR_FILE", source="sunrise", stops=14.2)
    lighting.remember(scene, str(tmp_path / "gone.exr"), mode="PHOTO", source="photo")
    layout = draw_panel(all_panels()[1], bpy.context)
    assert [args[0] for args, *_ in layout.find("template_list")][-1] == "LEDIFF_UL_history"
    assert layout.operators()["lediff.apply_world"].values == {"index": -1}
    for item in scene.lediff.history:  # one row per result: a thumbnail, or a warning if the file is gone
        row = RecordingLayout()
        panels.LEDIFF_UL_history.draw_item(None, bpy.context, row, scene.lediff, item, 0, scene.lediff, "history_index")
        (_, kwargs, _, _) = row.find("label")[0]
        assert ("icon_value" in kwargs) == item.filepath.endswith("sunrise.exr")


def test_lighting_section_without_world_and_with_map(bpy, studiolights):
    from lediff_blender import lighting

    bpy.context.scene.world = None
    assert any("has no World" in label for label in draw_panel(all_panels()[1], bpy.context).labels())
    lighting.apply_file(lighting.ensure_world(bpy.context.scene), str(studiolights["sunrise"]))
    assert any(label.startswith("sunrise") for label in draw_panel(all_panels()[1], bpy.context).labels())


@pytest.mark.parametrize("backend", ["LOCAL", "REMOTE"])
def test_preferences_draw(bpy, backend):
    from lediff_blender import preferences

    prefs = configure(bpy, backend=backend)
    info = bpy.context.window_manager.lediff_backend
    for checked, ok in ((False, False), (True, False), (True, True)):
        info.checked, info.ok, info.message = checked, ok, "no answer"
        layout = RecordingLayout()
        preferences.LEDIFF_AddonPreferences.draw(PrefsView(prefs, layout), bpy.context)
        props = set(layout.props())
        assert {"backend", "models_dir", "device"} <= props
        assert "lediff.test_backend" in layout.operators()
        if backend == "LOCAL":
            assert {"python_path", "torch_build"} <= props and "lediff.create_backend_env" in layout.operators()
            assert any("Online Access" in label for label in layout.labels())  # bpy's module mode is offline
        else:
            assert {"remote_url", "remote_token"} <= props
