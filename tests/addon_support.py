"""Helpers for the add-on tests: bpy with a private user folder, the add-on enabled the way Blender
enables it, a recording stand-in for ``UILayout``, a Blender script run in a subprocess, and a
loop that drives the generation pump (bpy's module mode never fires timers).

bpy's state is process-global, so the in-process tests start each test from factory settings
with the add-on enabled again (``fresh_addon``), and always end with it disabled: a
``bpy.app.timers`` callback left registered would hang the interpreter at exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
ADDON = "lediff_blender"


def import_bpy():
    """bpy, with Blender's user folder in a temporary directory (set before the first import)."""
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="lediff-blender-user-"))
    import bpy

    return bpy


def _enable() -> Any:
    import addon_utils

    errors: list[BaseException] = []
    module = addon_utils.enable(ADDON, default_set=True, handle_error=errors.append)
    if errors or module is None:
        raise RuntimeError(f"enabling {ADDON} failed: {errors!r}")
    return module


def _disable() -> None:
    import addon_utils
    import bpy

    errors: list[BaseException] = []
    addon_utils.disable(ADDON, default_set=True, handle_error=errors.append)
    from lediff_blender import generation, preferences

    for callback in (generation.pump, preferences._watch_env_builder):  # belt and braces, see above
        if bpy.app.timers.is_registered(callback):
            bpy.app.timers.unregister(callback)
    if errors:
        raise RuntimeError(f"disabling {ADDON} failed: {errors!r}")


def fresh_addon():
    """Factory settings (an empty scene with a World), then the add-on enabled; returns bpy."""
    bpy = import_bpy()
    bpy.ops.wm.read_factory_settings(use_empty=True)  # also disables add-ons it does not know
    bpy.context.scene.world = bpy.data.worlds.new("Test World")
    _enable()
    return bpy


@contextlib.contextmanager
def addon_session() -> Iterator[None]:
    """For a module-scoped fixture: the add-on is disabled at the end, whatever happened."""
    import_bpy()
    try:
        yield
    finally:
        _disable()


def configure(bpy, **values) -> Any:
    """Set add-on preferences, e.g. ``python_path=sys.executable``; returns them."""
    prefs = bpy.context.preferences.addons[ADDON].preferences
    for name, value in values.items():
        setattr(prefs, name, value)
    return prefs


def pump_until(condition, timeout: float, step: float = 0.02) -> float:
    """Call the generation pump until ``condition()`` holds; the seconds it took (AssertionError on timeout)."""
    from lediff_blender import generation

    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"pump: condition not met within {timeout} s")
        generation.pump()
        time.sleep(step)
    return time.monotonic() - start


def run_blender_script(code: str, *args: str, timeout: float = 120.0) -> dict:
    """Run ``code`` in a fresh Python with bpy (own user folder); its last stdout line as JSON."""
    with tempfile.TemporaryDirectory(prefix="lediff-blender-user-") as user:
        env = {**os.environ, "BLENDER_USER_RESOURCES": user}
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                                timeout=timeout, env=env, cwd=REPO)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise AssertionError(f"blender script failed ({result.returncode}):\n{result.stdout[-2000:]}\n"
                             f"{result.stderr[-3000:]}")
    return json.loads(lines[-1])


# A recording UILayout ------------------------------------------------------------------------

_CHILDREN = {"row", "column", "box", "split", "grid_flow", "column_flow"}


class OperatorButton:
    """What ``layout.operator`` returns: property assignments are checked against the operator."""

    def __init__(self, idname: str):
        import bpy

        module, name = idname.split(".")
        rna = getattr(getattr(bpy.ops, module), name).get_rna_type()  # KeyError for unknown operators
        object.__setattr__(self, "_properties", set(rna.properties.keys()))
        object.__setattr__(self, "idname", idname)
        object.__setattr__(self, "values", {})

    def __setattr__(self, name, value):
        if name not in self._properties:
            raise AttributeError(f"operator {self.idname} has no property {name!r}")
        self.values[name] = value


class RecordingLayout:
    """Stands in for ``bpy.types.UILayout``: records every call (shared ``calls`` list) and checks
    method names, layout attributes, ``prop`` names, operators and UI lists against bpy."""

    def __init__(self, calls: list | None = None, parent: RecordingLayout | None = None):
        object.__setattr__(self, "calls", [] if calls is None else calls)
        object.__setattr__(self, "parent", parent)
        object.__setattr__(self, "attributes", {})

    def __setattr__(self, name, value):
        import bpy

        if name not in bpy.types.UILayout.bl_rna.properties:
            raise AttributeError(f"UILayout has no attribute {name!r}")
        self.attributes[name] = value

    def flag(self, name: str, default=True):
        """A layout attribute (``enabled``, ``active``, ``alert``) as it applies here, parents included."""
        layout, values = self, []
        while layout is not None:
            values.append(layout.attributes.get(name, default))
            layout = layout.parent
        return all(values) if default else any(values)

    def __getattr__(self, name):
        import bpy

        if name.startswith("_") or name not in bpy.types.UILayout.bl_rna.functions:
            raise AttributeError(f"UILayout has no method {name!r}")

        def call(*args, **kwargs):
            result = self._result(name, args, kwargs)
            self.calls.append((name, args, kwargs, self, result))
            return result

        return call

    def _result(self, name, args, kwargs):
        import bpy

        if name in _CHILDREN:
            return RecordingLayout(self.calls, self)
        if name == "panel":
            return RecordingLayout(self.calls, self), RecordingLayout(self.calls, self)
        if name == "prop":
            data, prop = args[0], args[1]
            if prop not in data.bl_rna.properties:
                raise AttributeError(f"{data.bl_rna.identifier} has no property {prop!r}")
        if name == "operator":
            return OperatorButton(args[0])
        if name == "template_list":
            list_type, _, data, collection, active_data, active = args[:6]
            assert getattr(bpy.types, list_type, None) is not None, f"UI list {list_type} is not registered"
            assert collection in data.bl_rna.properties and active in active_data.bl_rna.properties
        return None

    # Queries over everything recorded under the root layout.
    def find(self, method: str) -> list[tuple]:
        return [(args, kwargs, layout, result) for name, args, kwargs, layout, result in self.calls if name == method]

    def props(self) -> list[str]:
        return [args[1] for args, _, _, _ in self.find("prop")]

    def operators(self) -> dict[str, OperatorButton]:
        return {result.idname: result for _, _, _, result in self.find("operator")}

    def labels(self) -> list[str]:
        return [kwargs.get("text", "") for _, kwargs, _, _ in self.find("label")]


class PrefsView:
    """``self`` for ``AddonPreferences.draw``: the real preferences with a recording ``layout``."""

    def __init__(self, prefs, layout: RecordingLayout):
        object.__setattr__(self, "_prefs", prefs)
        object.__setattr__(self, "layout", layout)

    def __getattr__(self, name):
        return getattr(self._prefs, name)
