"""Atomic file output: write to a temporary name in the target folder, rename into place.

No reader (Blender, a file browser, the next job) ever sees a half-written file, and a
failure or a cancel leaves nothing behind at the target path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import BadInput

__all__ = ["atomic_output", "check_writable_output"]


def check_writable_output(path: str | os.PathLike) -> Path:
    """Return ``path`` as an absolute Path if its folder exists and is writable, else BadInput."""
    target = Path(path).expanduser().absolute()
    folder = target.parent
    if not folder.is_dir():
        raise BadInput(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"output folder is not writable: {folder}")
    if target.is_dir():
        raise BadInput(f"output path is a folder: {target}")
    try:  # os.access says yes for root and on read-only mounts where creating a file fails
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise BadInput(f"output folder is not writable: {folder} ({error.strerror})") from error
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary name keeps the extension (some writers choose the format by it) and starts
    with a dot so that file browsers hide it. On any exception it is removed.
    """
    target = check_writable_output(path)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent
        )
    except OSError as error:  # os.access can say yes (root, read-only mounts) where creating fails
        raise BadInput(f"output folder is not writable: {target.parent} ({error.strerror})") from error
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
