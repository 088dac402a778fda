"""Real CC0 HDR panoramas that ship inside Blender's bpy wheel, for the demo, tests and benchmarks.

Eight Poly Haven world studio lights, 1024x512 equirect EXRs with 10-22 stops of range.
Found without importing bpy (importing it costs seconds and hundreds of MB).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import BadInput

__all__ = ["STUDIOLIGHT_NAMES", "studiolights_dir", "studiolight_path"]

STUDIOLIGHT_NAMES = ("city", "courtyard", "forest", "interior", "night", "studio", "sunrise", "sunset")


def studiolights_dir() -> Path | None:
    """The bpy wheel's ``datafiles/studiolights/world`` folder, or None when bpy is absent."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for folder in sorted(Path(root).glob("*/datafiles/studiolights/world")):
            if folder.is_dir():
                return folder
    return None


def studiolight_path(name: str) -> Path:
    """Path of one studio light EXR by name; BadInput when bpy or the file is missing."""
    folder = studiolights_dir()
    if folder is None:
        raise BadInput("the sample HDRIs come with Blender's bpy wheel: pip install bpy==4.5.4")
    path = folder / f"{name}.exr"
    if not path.is_file():
        raise BadInput(f"no studio light named {name!r}; choose from {', '.join(STUDIOLIGHT_NAMES)}")
    return path
