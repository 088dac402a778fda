"""Install the built zip as Blender does and enable, disable and re-enable it twice.

Runs in a subprocess of its own (a fresh bpy with a private user folder), since installing an
extension changes process-wide state; the script prints one JSON line of observations. A hang
(a timer left registered, a backend left running) fails by the subprocess timeout.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.addon_support import REPO, run_blender_script

pytestmark = [pytest.mark.blender, pytest.mark.slow]

SCRIPT = r"""
import json, sys
import bpy
import addon_utils  # on the path once bpy is imported

zip_path, hdri = sys.argv[1], sys.argv[2]
MODULE = "bl_ext.user_default.lediff_blender"
errors = []

def state():
    generation = sys.modules.get(MODULE + ".generation")
    return {
        "enabled": addon_utils.check(MODULE)[1],
        "classes": [hasattr(bpy.types, name) for name in ("LEDIFF_PT_world", "LEDIFF_PT_sidebar",
                                                          "LEDIFF_OT_generate", "LEDIFF_UL_history")],
        "properties": [hasattr(bpy.types.World, "lediff"), hasattr(bpy.types.Scene, "lediff"),
                       hasattr(bpy.types.WindowManager, "lediff_job")],
        "timer": bool(generation) and bpy.app.timers.is_registered(generation.pump),
        "preferences": getattr(bpy.context.preferences.addons.get(MODULE), "preferences", None) is not None,
    }

report = {"install": sorted(bpy.ops.extensions.package_install_files(
    filepath=zip_path, repo="user_default", enable_on_install=True))}
report["installed"] = state()
package = sys.modules[MODULE]
report["protocol_file"] = sys.modules[MODULE + ".protocol"].__file__
report["data_folder"] = sys.modules[MODULE + ".preferences"].data_folder("results")
report["user_extensions"] = bpy.utils.user_resource("EXTENSIONS")
report["bundled_backend"] = sys.modules[MODULE + ".backend_env"].bundled_backend()
bpy.context.scene.world = bpy.data.worlds.new("World")
report["open_hdri"] = sorted(bpy.ops.lediff.open_hdri(filepath=hdri))
bpy.context.scene.world.lediff.ev = 2.0
report["cycles"] = []
for _ in range(2):
    generation = sys.modules[MODULE + ".generation"]
    bpy.app.timers.register(generation.pump, first_interval=100.0)  # as if a job were in flight
    addon_utils.disable(MODULE, default_set=True, handle_error=errors.append)
    disabled = state()
    disabled["timer"] = bpy.app.timers.is_registered(generation.pump)
    addon_utils.enable(MODULE, default_set=True, handle_error=errors.append)
    report["cycles"].append({"disabled": disabled, "enabled": state(),
                             "ev_kept": bpy.context.scene.world.lediff.ev,
                             "poll": bpy.ops.lediff.add_sun.poll()})
report["errors"] = [repr(e) for e in errors]
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("build_extension", REPO / "scripts" / "build_extension.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(out_dir=tmp_path_factory.mktemp("dist"))  # the real artefact, backend wheel included


def test_install_enable_disable_reenable_twice(built, studiolights):
    report = run_blender_script(SCRIPT, str(built), str(studiolights["sunrise"]), timeout=120)
    assert report["install"] == ["FINISHED"] and report["errors"] == []
    on = {"enabled": True, "classes": [True] * 4, "properties": [True] * 3, "timer": False, "preferences": True}
    off = {"enabled": False, "classes": [False] * 4, "properties": [False] * 3, "timer": False, "preferences": False}
    assert report["installed"] == on
    assert report["open_hdri"] == ["FINISHED"]
    # The installed copy runs, with the zip's own protocol module and the extension's user folder.
    assert report["protocol_file"].startswith(report["user_extensions"])
    assert report["data_folder"].startswith(report["user_extensions"])
    assert report["bundled_backend"].startswith(report["user_extensions"])  # for Create Backend Environment
    assert report["bundled_backend"].endswith("-py3-none-any.whl")
    for cycle in report["cycles"]:
        assert cycle["disabled"] == off  # unregister removed classes, properties and the timer
        assert cycle["enabled"] == on
        assert cycle["ev_kept"] == 2.0  # the World's settings survive a disable/enable
        assert cycle["poll"] is True
