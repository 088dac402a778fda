"""Build the Blender extension: ``dist/lediff_blender-<version>.zip``, validated on the way.

    python scripts/build_extension.py [--out-dir dist] [--no-backend-wheel]

The zip's root holds what Blender expects of an add-on extension::

    blender_manifest.toml      the repository's manifest, unchanged
    __init__.py, client.py...  lediff_blender/ minus the manifest's [build] paths_exclude_pattern
    protocol.py, errors.py     backend/lediff_backend/protocol.py and the modules it imports
                               relatively (one source for the protocol; see lediff_blender/protocol.py)
    backend/lediff_backend-<v>-py3-none-any.whl
                               the backend, for the add-on's "Create Backend Environment"

Checks made here (tests cannot assume a Blender binary, and the bpy module has no
``extension`` command): the manifest's fields follow Blender's strict rules
(``validate_manifest``), every module in the zip imports only the standard library, Blender's
own modules and its siblings, and no two files collide. Entries are sorted and time-stamped
1980-01-01, so the same sources give the same bytes.

The backend wheel is built by ``pip wheel`` from a staged copy of ``backend/`` (so that no
build folders land in the repository). It needs setuptools in this interpreter;
``--no-backend-wheel`` skips it.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFEST = "blender_manifest.toml"
ADDON_DIR = "lediff_blender"
BACKEND_PACKAGE = Path("backend", "lediff_backend")
SHARED_ROOT_MODULE = "protocol.py"
WHEEL_FOLDER = "backend"

# Modules a Blender add-on may import besides the standard library.
BLENDER_MODULES = frozenset({"bpy", "bpy_extras", "bmesh", "mathutils", "addon_utils", "bl_math", "gpu", "_cycles"})

# Blender's strict manifest rules (blender_ext.py, "Manifest Validation"), restated.
REQUIRED = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type", "license",
            "blender_version_min")
TERSE_MAX = 64
PERMISSIONS = frozenset({"files", "network", "clipboard", "camera", "microphone"})
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class BuildError(Exception):
    """The manifest or the sources break a rule; the message lists every problem found."""


# Manifest -------------------------------------------------------------------------------------


def _terse_problem(value: object) -> str | None:
    """Blender's rule for a tagline or a permission reason, or None when ``value`` follows it."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"
    if value != value.strip() or any(ord(c) < 32 for c in value):
        return "must have no leading/trailing white space or control characters"
    if len(value) > TERSE_MAX:
        return f"must be at most {TERSE_MAX} characters, not {len(value)}"
    if not (value[-1].isalnum() or value[-1] in ")]}"):
        return "must not end with punctuation"
    return None


def _id_problem(value: str) -> str | None:
    if not value.isidentifier() or "__" in value or value.startswith("_") or value.endswith("_"):
        return "must be a Python identifier without '__' and without a leading or trailing '_'"
    return None


def validate_manifest(data: dict) -> list[str]:
    """Every way ``data`` (a parsed manifest) breaks Blender's strict rules; empty when valid."""
    problems = [f"missing '{key}'" for key in REQUIRED if key not in data]
    strings = [k for k in (*REQUIRED, "website") if k in data and k != "license"]
    problems += [f"'{key}' must be a string" for key in strings if not isinstance(data[key], str)]
    if problems:
        return problems

    def check(key: str, problem: str | None) -> None:
        if problem:
            problems.append(f"'{key}' {problem}")

    for key in ("schema_version", "version"):
        check(key, None if SEMVER.match(data[key]) else f"must be a semantic version, not {data[key]!r}")
    check("id", _id_problem(data["id"]))
    check("tagline", _terse_problem(data["tagline"]))
    check("type", None if data["type"] == "add-on" else f"must be 'add-on' for this extension, not {data['type']!r}")
    for key in ("name", "maintainer"):
        check(key, None if data[key].strip() == data[key] and data[key] else "must be non-empty, without outer spaces")
    check("blender_version_min",
          None if re.fullmatch(r"\d+\.\d+\.\d+", data["blender_version_min"]) else "must be X.Y.Z")
    licenses = data["license"]
    check("license", None if isinstance(licenses, list) and licenses and all(
        isinstance(x, str) and x.startswith("SPDX:") and len(x) > 5 for x in licenses
    ) else "must be a non-empty list of 'SPDX:<identifier>' strings")
    tags = data.get("tags", ["ok"])
    check("tags", None if isinstance(tags, list) and tags and all(isinstance(t, str) and t.strip() for t in tags)
          else "must be a non-empty list of non-empty strings")
    permissions = data.get("permissions", {})
    if not isinstance(permissions, dict):
        problems.append("'permissions' must be a table of reasons")
    else:
        for name, reason in permissions.items():
            check(f"permissions.{name}", None if name in PERMISSIONS else f"is not one of {sorted(PERMISSIONS)}")
            check(f"permissions.{name}", _terse_problem(reason))
    patterns = data.get("build", {}).get("paths_exclude_pattern", [])
    check("build.paths_exclude_pattern", None if isinstance(patterns, list) and all(
        isinstance(p, str) and p and "\\" not in p for p in patterns
    ) else "must be a list of non-empty patterns with '/' separators")
    return problems


def load_manifest(path: Path) -> dict:
    """The parsed, validated manifest (BuildError listing the problems otherwise)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"{path}: {exc}") from None
    problems = validate_manifest(data)
    if problems:
        raise BuildError(f"{path} breaks Blender's manifest rules:\n  " + "\n  ".join(problems))
    return data


# Files ----------------------------------------------------------------------------------------


def is_excluded(relative: str, patterns: list[str]) -> bool:
    """Whether a file (``a/b.py``, '/' separators) is excluded by Blender's ``paths_exclude_pattern``.

    Blender's rules (its ``PathPatternMatch``; no ``**`` or ``!`` here): a pattern matches the
    last segments of the file's path or of one of its folders (excluding a folder excludes what
    it holds), segment by segment, ``*`` never crossing a '/'; a leading '/' anchors it at the
    root instead; a trailing '/' matches folders only.
    """
    parts = relative.split("/")
    prefixes = [(parts[:n], n < len(parts)) for n in range(1, len(parts) + 1)]  # folders, then the file
    for pattern in patterns:
        anchored, folders_only = pattern.startswith("/"), pattern.endswith("/")
        segments = pattern.strip("/").split("/")
        for prefix, is_folder in prefixes:
            tail = prefix if anchored else prefix[-len(segments):]
            if (is_folder or not folders_only) and len(tail) == len(segments) \
                    and all(map(fnmatch.fnmatchcase, tail, segments)):
                return True
    return False


def addon_files(addon_dir: Path, patterns: list[str]) -> dict[str, Path]:
    """Zip name -> source file for the add-on folder, minus excluded paths."""
    files = {}
    for path in sorted(addon_dir.rglob("*")):
        relative = path.relative_to(addon_dir).as_posix()
        if path.is_file() and not is_excluded(relative, patterns):
            files[relative] = path
    return files


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level absolute imports, sibling modules imported relatively) of one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    absolute, relative = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            absolute.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                relative.add(node.module.split(".")[0])
            else:
                relative.update(alias.name for alias in node.names)
    return absolute, relative


def shared_modules(package_dir: Path, root: str = SHARED_ROOT_MODULE) -> dict[str, Path]:
    """``root`` and every module of ``package_dir`` it imports relatively, transitively."""
    found: dict[str, Path] = {}
    pending = [root]
    while pending:
        name = pending.pop()
        path = package_dir / name
        if name in found:
            continue
        if not path.is_file():
            raise BuildError(f"{root} imports {name[:-3]!r}, which is not a module file in {package_dir}")
        found[name] = path
        pending.extend(f"{module}.py" for module in _imports(path)[1])
    return dict(sorted(found.items()))


def check_imports(modules: dict[str, Path]) -> None:
    """BuildError unless every module imports only stdlib, Blender and modules inside the zip."""
    problems = []
    for name, path in modules.items():
        if not name.endswith(".py"):
            continue
        absolute, relative = _imports(path)
        foreign = sorted(m for m in absolute if m not in sys.stdlib_module_names and m not in BLENDER_MODULES
                         and m != "__future__")
        missing = sorted(m for m in relative if f"{m}.py" not in modules and f"{m}/__init__.py" not in modules)
        if foreign:
            problems.append(f"{name} imports {', '.join(foreign)} (only the standard library and bpy may be used)")
        if missing:
            problems.append(f"{name} imports .{', .'.join(missing)}, which the zip does not hold")
    if problems:
        raise BuildError("the extension's imports break the rules:\n  " + "\n  ".join(problems))


def build_backend_wheel(backend_dir: Path, out_dir: Path) -> Path:
    """A wheel of the backend, built by ``pip wheel`` from a staged copy (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="lediff-wheel-") as tmp:
        stage = Path(tmp, "backend")
        shutil.copytree(backend_dir / "lediff_backend", stage / "lediff_backend",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(backend_dir / "pyproject.toml", stage / "pyproject.toml")
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "--quiet", "--wheel-dir", str(out_dir), str(stage)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"building the backend wheel failed:\n{result.stderr[-2000:]}")
    wheels = sorted(out_dir.glob("lediff_backend-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one backend wheel in {out_dir}, found {[w.name for w in wheels]}")
    return wheels[0]


# Zip ------------------------------------------------------------------------------------------


def write_zip(target: Path, files: dict[str, Path]) -> None:
    """Write ``files`` (zip name -> source) sorted, with fixed time stamps, atomically."""
    partial = target.with_name(f".{target.name}.part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name].read_bytes())
    partial.replace(target)


def build(repo: Path = REPO, out_dir: Path | None = None, *, backend_wheel: bool = True) -> Path:
    """Validate and write ``<out_dir>/<id>-<version>.zip``; returns its path."""
    manifest = load_manifest(repo / MANIFEST)
    out_dir = Path(out_dir or repo / "dist")
    out_dir.mkdir(parents=True, exist_ok=True)
    patterns = manifest.get("build", {}).get("paths_exclude_pattern", [])
    files = {MANIFEST: repo / MANIFEST}
    for group in (addon_files(repo / ADDON_DIR, patterns), shared_modules(repo / BACKEND_PACKAGE)):
        clashes = sorted(set(group) & set(files))
        if clashes:
            raise BuildError(f"two sources for {', '.join(clashes)} in the zip")
        files.update(group)
    if "__init__.py" not in files:
        raise BuildError(f"{ADDON_DIR}/__init__.py is missing (or excluded): an add-on needs it")
    check_imports(files)
    with tempfile.TemporaryDirectory(prefix="lediff-build-") as tmp:
        if backend_wheel:
            wheel = build_backend_wheel(repo / "backend", Path(tmp))
            files[f"{WHEEL_FOLDER}/{wheel.name}"] = wheel
        target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
        write_zip(target, files)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, help="folder for the zip (default: dist/)")
    parser.add_argument("--no-backend-wheel", action="store_true",
                        help="leave the backend wheel out (the add-on can then not create its environment)")
    args = parser.parse_args(argv)
    try:
        target = build(out_dir=args.out_dir, backend_wheel=not args.no_backend_wheel)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
