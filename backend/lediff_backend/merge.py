"""Exposure brackets -> HDR EXR: the service behind ``lediff merge`` and the server's ``merge`` job.

The classic engine (``classic.merge``) is the only one so far; ``auto`` resolves to it. The
result is in the reference exposure's units (its white is 1.0); ``ev_reference`` in the
metadata is that exposure's EV (from EXIF: ``log2(t · ISO/100 / N²)``), so
``hdr * 2**-ev_reference`` puts merges of different brackets on one absolute scale.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from .errors import BadInput, BadRequest, MissingWeights
from .hdr.atomic import check_writable_output
from .hdr.summary import is_panorama, summarize

__all__ = ["MERGE_ENGINES", "RESPONSES", "resolve_merge_engine", "merge_files"]

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]

MERGE_ENGINES = ("classic",)
PLANNED_ENGINES = ("lfdiff", "gmodiff")  # the models of issue 9, not built yet
RESPONSES = ("srgb", "recover", "linear")


def resolve_merge_engine(engine: str) -> str:
    """The merge engine that runs: ``auto`` is ``classic``."""
    if engine in ("auto", *MERGE_ENGINES):
        return "classic"
    if engine in PLANNED_ENGINES:
        raise MissingWeights(f"merge: the {engine} engine is not built yet in this backend; use the classic engine")
    raise BadRequest(f"unknown merge engine {engine!r}; choose from auto, {', '.join(MERGE_ENGINES)}")


def merge_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    evs: Sequence[float] | None = None,
    engine: str = "auto",
    reference: int | None = None,
    response: str | None = None,
    half: bool = False,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> dict:
    """Merge bracket files into an HDR file (written atomically); returns its metadata.

    ``evs`` (one per input) default to the files' EXIF; ``reference`` (an index into
    ``inputs``) to the middle exposure; ``response`` to ``linear`` for RAW files and ``srgb``
    otherwise (``recover``: estimated from the brackets). A 2:1 bracket is a 360° panorama:
    alignment and ghost masks wrap across its seam, and the EXR is tagged latlong.

    Raises
    ------
    BadInput
        Unreadable files, not a bracket (too few images, sizes differ, same exposures, EVs
        neither given nor in EXIF, wrong EV count, RAW mixed with developed images), or an
        unknown response.
    """
    from .classic.brackets import bracket_evs, read_bracket
    from .classic.merge import merge_brackets
    from .convert import write_result

    target = check_writable_output(output)
    resolve_merge_engine(engine)
    stages = 5  # read, then merge_brackets' align, response and merge, then write

    def report(stage: str, step: int) -> None:
        if progress is not None:
            progress(stage, step, stages)

    report("read", 0)
    images = [read_bracket(path) for path in inputs]
    names = [Path(path).name for path in inputs]
    evs = bracket_evs(images, evs, names)
    if len({image.linear for image in images}) > 1:
        raise BadInput("the bracket mixes camera RAW files with developed images: use one kind")
    if response is None:
        response = "linear" if images[0].linear else "srgb"
    height, width = images[0].pixels.shape[:2]
    merged = merge_brackets(
        [image.pixels for image in images], evs, response=response, reference=reference,
        wrap=is_panorama(height, width), progress=lambda stage, step, _: report(stage, step + 1),
        should_cancel=should_cancel,
    )
    report("write", stages - 1)
    meta = summarize(merged.hdr)
    meta.update(
        engine="classic", inputs=names, evs=evs, reference=merged.reference, ev_reference=evs[merged.reference],
        response=response, shifts=[list(s) for s in merged.shifts],
        ghost_fraction=round(float((merged.ghost > 0.5).mean()), 4),
    )
    write_result(target, merged.hdr, meta, half=half)
    meta["output"] = str(target)
    return meta
