"""Shared fixtures: the real CC0 HDR panoramas that Blender's bpy wheel ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from lediff_backend.sample_data import STUDIOLIGHT_NAMES, studiolights_dir


@pytest.fixture(scope="session")
def studiolights() -> dict[str, Path]:
    """Name -> path of the eight studio light EXRs (1024x512, CC0, from Poly Haven)."""
    folder = studiolights_dir()
    if folder is None:
        pytest.fail("the bpy wheel is not installed: run ./dev test, which installs it")
    return {name: folder / f"{name}.exr" for name in STUDIOLIGHT_NAMES}
