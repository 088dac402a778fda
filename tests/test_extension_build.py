"""``scripts/build_extension.py``: the zip's contents, and its manifest rules checked against
Blender's own validator (``bl_pkg/cli/blender_ext.py`` inside the bpy wheel, stdlib only, loaded
here from its file without importing bpy).
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BACKEND = REPO / "backend" / "lediff_backend"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


build_extension = _load("build_extension", REPO / "scripts" / "build_extension.py")


@pytest.fixture(scope="module")
def blender_ext():
    """Blender's extension command-line module, from the bpy wheel."""
    spec = importlib.util.find_spec("bpy")
    if spec is None:
        pytest.fail("the bpy wheel is not installed: run ./dev test, which installs it")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    return _load("blender_ext", found[0])


@pytest.fixture(scope="module")
def blender_tags():
    spec = importlib.util.find_spec("bpy")
    (path,) = Path(spec.submodule_search_locations[0]).glob("*/scripts/modules/_bpy_internal/extensions/tags.py")
    namespace: dict = {}
    exec(path.read_text(encoding="utf-8"), namespace)
    return namespace["addons"]


@pytest.fixture(scope="module")
def manifest() -> dict:
    return tomllib.loads((REPO / "blender_manifest.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_extension.build(out_dir=tmp_path_factory.mktemp("dist"))


def test_zip_holds_manifest_addon_protocol_and_backend_wheel(built, manifest):
    assert built.name == f"lediff_blender-{manifest['version']}.zip"
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        addon = {p.name for p in (REPO / "lediff_blender").glob("*.py")} - {"protocol.py"}  # the repo's shim
        assert addon | {"blender_manifest.toml", "protocol.py", "errors.py"} <= names
        assert archive.read("protocol.py") == (BACKEND / "protocol.py").read_bytes()  # one source
        assert archive.read("errors.py") == (BACKEND / "errors.py").read_bytes()
        assert archive.read("blender_manifest.toml") == (REPO / "blender_manifest.toml").read_bytes()
        (wheel,) = [n for n in names if n.startswith("backend/")]
        assert wheel.startswith("backend/lediff_backend-") and wheel.endswith("-py3-none-any.whl")
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/." in f"/{n}"]


def test_blender_accepts_the_manifest_and_the_zip(built, manifest, blender_ext, blender_tags):
    assert build_extension.validate_manifest(manifest) == []
    assert blender_ext.pkg_manifest_is_valid_or_error(manifest, from_repo=False, strict=True) is None
    checked = blender_ext.pkg_manifest_from_archive_and_validate(str(built), strict=True)
    assert not isinstance(checked, str), checked
    assert set(manifest["tags"]) <= blender_tags
    assert {"files", "network"} <= set(manifest["permissions"])


BROKEN = {
    "tagline too long": ("tagline", "x" * 65),
    "tagline ends with a full stop": ("tagline", "Generate HDR lighting."),
    "tagline with outer space": ("tagline", " Generate HDR lighting"),
    "id with double underscore": ("id", "lediff__blender"),
    "id not an identifier": ("id", "lediff-blender"),
    "version not semantic": ("version", "1.0"),
    "type not add-on": ("type", "plugin"),
    "blender version with two numbers": ("blender_version_min", "4.2"),
    "license empty": ("license", []),
    "permission reason ends with punctuation": ("permissions", {"files": "Read photos."}),
    "permission reason too long": ("permissions", {"network": "y" * 65}),
    "unknown permission": ("permissions", {"gpu": "Render things"}),
    "missing maintainer": ("maintainer", None),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_manifests_are_refused_like_blender_does(manifest, blender_ext, case):
    key, value = BROKEN[case]
    broken = copy.deepcopy(manifest)
    if value is None:
        del broken[key]
    else:
        broken[key] = value
    assert build_extension.validate_manifest(broken), f"ours accepted: {case}"
    assert blender_ext.pkg_manifest_is_valid_or_error(broken, from_repo=False, strict=True), f"Blender's accepted: {case}"


def test_exclude_patterns_match_like_blenders(manifest, blender_ext):
    patterns = manifest["build"]["paths_exclude_pattern"] + ["docs/*.md", "/local_only", "docs/deep"]
    paths = ["__init__.py", "protocol.py", "sub/protocol.py", "__pycache__/x.pyc", "sub/__pycache__/y.pyc",
             ".hidden", "sub/.hidden/file.py", "client.pyc", "docs/a.md", "docs/deep/b.md", "local_only",
             "sub/local_only", "sub/docs/a.md", "notes.pyc/readme.txt", "docs/deep", "a/docs/deep/c.py"]
    theirs = blender_ext.PathPatternMatch(patterns)
    for path in paths:
        parts = path.split("/")
        blender_excludes = any(theirs.test_path("/".join(parts[:i]) + "/") for i in range(1, len(parts))) \
            or theirs.test_path(path)
        assert build_extension.is_excluded(path, patterns) == blender_excludes, path


def _fake_repo(tmp_path: Path, addon_source: str) -> Path:
    repo = tmp_path / "repo"
    (repo / "lediff_blender").mkdir(parents=True)
    (repo / "backend" / "lediff_backend").mkdir(parents=True)
    shutil.copy(REPO / "blender_manifest.toml", repo)
    for name in ("protocol.py", "errors.py"):
        shutil.copy(BACKEND / name, repo / "backend" / "lediff_backend" / name)
    (repo / "lediff_blender" / "__init__.py").write_text(addon_source)
    return repo


def test_imports_beyond_stdlib_and_bpy_are_refused(tmp_path):
    repo = _fake_repo(tmp_path, "import bpy\nimport numpy\nfrom . import protocol, missing\n")
    with pytest.raises(build_extension.BuildError) as error:
        build_extension.build(repo, tmp_path / "dist", backend_wheel=False)
    assert "imports numpy" in str(error.value) and ".missing" in str(error.value)


def test_builds_are_reproducible_and_the_protocol_copy_imports_alone(tmp_path):
    repo = _fake_repo(tmp_path, "import bpy\nfrom . import protocol\n")
    first = build_extension.build(repo, tmp_path / "a", backend_wheel=False).read_bytes()
    second = build_extension.build(repo, tmp_path / "b", backend_wheel=False)
    assert second.read_bytes() == first
    package = tmp_path / "unzipped" / "lediff_zip_check"
    with zipfile.ZipFile(second) as archive:
        archive.extractall(package)
    (package / "__init__.py").write_text("")  # the add-on's own __init__ needs bpy; the protocol must not
    sys.path.insert(0, str(package.parent))
    try:
        protocol = importlib.import_module("lediff_zip_check.protocol")
        assert protocol.PROTOCOL_VERSION == 1 and protocol.__file__.startswith(str(package))
    finally:
        sys.path.remove(str(package.parent))
        for name in [n for n in sys.modules if n.startswith("lediff_zip_check")]:
            del sys.modules[name]


def test_build_refuses_a_broken_manifest(tmp_path):
    repo = _fake_repo(tmp_path, "import bpy\n")
    text = (repo / "blender_manifest.toml").read_text()
    (repo / "blender_manifest.toml").write_text(text.replace('version = "0.1.0"', 'version = "one"'))
    with pytest.raises(build_extension.BuildError, match="'version' must be a semantic version"):
        build_extension.build(repo, tmp_path / "dist", backend_wheel=False)
    assert not (tmp_path / "dist").exists()


def test_command_line_prints_the_zip_path(tmp_path, capsys):
    assert build_extension.main(["--out-dir", str(tmp_path), "--no-backend-wheel"]) == 0
    assert Path(capsys.readouterr().out.strip()).is_file()
