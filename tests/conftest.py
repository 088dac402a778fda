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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and spinning threads crawl on a busy CI machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A models root of tiny random-init models in the official layouts (``lediff tiny-models``)."""
    from lediff_backend.testing.tiny import ensure_tiny_models

    root = tmp_path_factory.getbasetemp() / "tiny-models"
    ensure_tiny_models(root)
    return root
