"""Exposure brackets -> HDR EXR: the service behind ``lediff merge`` and the server's ``merge`` job.

Engines: ``classic`` (``classic.merge``, weight-free; what ``auto`` runs) and the neural merge
engines of ``NEURAL_ENGINES``, each a module imported only when asked for, with one contract::

    load_pipeline(model_dir, device="auto") -> a pipeline on that device
    merge_bracket(images, evs, *, reference, model_dir, device="auto", seed=0, progress=None,
                  should_cancel=None, pipeline=None) -> HxWx3 float32 scene-linear HDR, the
                  reference's white = 1 (``pipeline``: a warm one, else ``model_dir`` is loaded)

``images`` are HxWx3 float32 display values in [0, 1] as the camera encoded them, already
aligned; ``evs`` their exposures. This module reads the files, resolves the EVs, picks the
three exposures the models take (darkest, reference, brightest: ``neural_exposures``) and
aligns them (``classic.align``) before calling the engine.

The result is in the reference exposure's units (its white is 1.0); ``ev_reference`` in the
metadata is that exposure's EV (from EXIF: ``log2(t · ISO/100 / N²)``), so
``hdr * 2**-ev_reference`` puts merges of different brackets on one absolute scale.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

from .errors import BadInput, BadRequest, Cancelled, MissingWeights
from .hdr.imageio import check_image_output
from .hdr.summary import is_panorama, summarize

__all__ = ["MERGE_ENGINES", "NEURAL_ENGINES", "RESPONSES", "resolve_merge_engine", "neural_engine",
           "neural_exposures", "merge_files"]

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]
WarmFn = Callable[[tuple, Callable[[], Any]], Any]  # (key, load) -> the pipeline kept for key

# name -> the engine's module (imported lazily: torch is heavy)
NEURAL_ENGINES = {
    "gmodiff": "lediff_backend.pipelines.gmodiff",
    "lfdiff": "lediff_backend.pipelines.lfdiff",
}
MERGE_ENGINES = ("classic", *NEURAL_ENGINES)
RESPONSES = ("srgb", "recover", "linear")
NEURAL_EXTRA = "pip install 'lediff-backend[neural]' (after torch for your GPU, see README)"


def resolve_merge_engine(engine: str) -> str:
    """The merge engine that runs: ``auto`` is ``classic`` (the neural engines run when asked for)."""
    if engine in ("auto", "classic"):
        return "classic"
    if engine in NEURAL_ENGINES:
        return engine
    raise BadRequest(f"unknown merge engine {engine!r}; choose from auto, {', '.join(MERGE_ENGINES)}")


def neural_engine(name: str) -> ModuleType:
    """A neural engine's module (``load_pipeline``, ``merge_bracket``), or MissingWeights saying
    what is missing."""
    module_name = NEURAL_ENGINES[name]
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:  # torch, diffusers or safetensors missing
        raise MissingWeights(f"merge: the {name} engine needs torch and diffusers ({exc}): {NEURAL_EXTRA}") from exc


def neural_exposures(evs: Sequence[float], reference: int, engine: str) -> list[int]:
    """Indices of the three exposures a neural engine merges: the darkest, ``reference`` and the
    brightest. BadInput for fewer than three, or a reference at either end of the bracket."""
    if len(evs) < 3:
        raise BadInput(f"the {engine} engine merges three exposures (darkest, reference, brightest), got"
                       f" {len(evs)}: shoot a third, or use the classic engine")
    darkest = min(range(len(evs)), key=lambda i: evs[i])
    brightest = max(range(len(evs)), key=lambda i: evs[i])
    if evs[reference] in (evs[darkest], evs[brightest]):
        raise BadInput(f"the {engine} engine needs the reference (image {reference}, EV {evs[reference]:g}) between"
                       f" a darker and a brighter exposure; choose another --reference")
    return [darkest, reference, brightest]


def merge_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    evs: Sequence[float] | None = None,
    engine: str = "auto",
    reference: int | None = None,
    response: str | None = None,
    half: bool = False,
    model_dir: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    warm: WarmFn | None = None,
) -> dict:
    """Merge bracket files into an HDR file (written atomically); returns its metadata.

    ``evs`` (one per input) default to the files' EXIF; ``reference`` (an index into
    ``inputs``) to the middle exposure. ``response``, the classic engine's only, defaults to
    ``linear`` for RAW files and ``srgb`` otherwise (``recover``: estimated from the brackets).
    A 2:1 bracket is a 360° panorama: alignment and ghost masks wrap across its seam, and the
    EXR is tagged latlong. ``model_dir``, ``device`` and ``seed`` are the neural engines' (a
    neural engine merges the darkest, reference and brightest exposures; RAW files reach it
    sRGB-encoded; ``warm(key, load)``, e.g. the server's pipeline cache, keeps its pipeline
    loaded between calls).

    Raises
    ------
    BadInput
        Unreadable files, not a bracket (too few images, sizes differ, same exposures, EVs
        neither given nor in EXIF, wrong EV count, RAW mixed with developed images), an
        unknown response, or a response for a neural engine.
    MissingWeights
        A neural engine without its weights or without torch.
    """
    from .classic.brackets import bracket_evs, read_bracket
    from .classic.merge import check_bracket, default_reference
    from .convert import write_result

    target = check_image_output(output)
    name = resolve_merge_engine(engine)
    engine_module = neural_engine(name) if name != "classic" else None  # before reading: fail fast
    if engine_module is not None and response is not None:
        raise BadInput(f"--response is the classic engine's: the {name} engine reads the images as the camera"
                       " encoded them")
    stages = 5  # classic: read, then merge_brackets' align, response and merge, then write

    def report(stage: str, step: int, total: int = stages) -> None:
        if progress is not None:
            progress(stage, step, total)

    report("read", 0)
    images = [read_bracket(path) for path in inputs]
    names = [Path(path).name for path in inputs]
    evs = bracket_evs(images, evs, names)
    if len({image.linear for image in images}) > 1:
        raise BadInput("the bracket mixes camera RAW files with developed images: use one kind")
    height, width = images[0].pixels.shape[:2]
    wrap = is_panorama(height, width)
    pixels = [image.pixels for image in images]
    if engine_module is None:
        response = response or ("linear" if images[0].linear else "srgb")
        hdr, meta = _classic(pixels, evs, response, reference, wrap, report, should_cancel)
    else:
        reference = default_reference(evs) if reference is None else reference
        check_bracket(pixels, evs, reference)
        hdr, meta = _neural(engine_module, name, pixels, evs, reference, wrap, images[0].linear, report,
                            should_cancel, warm, model_dir=model_dir, device=device, seed=seed)
    report("write", stages - 1)
    meta = {**summarize(hdr), "engine": name, "inputs": names, "evs": evs, **meta,
            "ev_reference": evs[meta["reference"]]}
    write_result(target, hdr, meta, half=half)
    meta["output"] = str(target)
    return meta


def _classic(pixels, evs, response, reference, wrap, report, should_cancel) -> tuple:
    """The classic merge: (HDR, its metadata)."""
    from .classic.merge import merge_brackets

    merged = merge_brackets(
        pixels, evs, response=response, reference=reference, wrap=wrap,
        progress=lambda stage, step, _: report(stage, step + 1), should_cancel=should_cancel,
    )
    return merged.hdr, dict(
        reference=merged.reference, response=response, shifts=[list(s) for s in merged.shifts],
        ghost_fraction=round(float((merged.ghost > 0.5).mean()), 4),
    )


def _neural(engine, name, pixels, evs, reference, wrap, linear, report, should_cancel, warm, **options) -> tuple:
    """A neural engine's merge of the darkest, reference and brightest exposures, aligned onto
    the reference: (HDR, its metadata)."""
    from .classic.align import align_brackets
    from .hdr.color import linear_to_srgb

    chosen = neural_exposures(evs, reference, name)
    report("align", 1)
    if should_cancel is not None and should_cancel():
        raise Cancelled("merge cancelled")
    three = [linear_to_srgb(pixels[i]) if linear else pixels[i] for i in chosen]  # the models read encoded values
    aligned, shifts = align_brackets(three, 1, wrap=wrap)
    if should_cancel is not None and should_cancel():
        raise Cancelled("merge cancelled")
    pipeline = None
    if warm is not None:

        def load() -> Any:
            report("load", 0, 1)
            loaded = engine.load_pipeline(options["model_dir"], options["device"])
            report("load", 1, 1)
            return loaded

        pipeline = warm(((f"{name}:{options['model_dir'] or ''}",), str(options["device"]), "default"), load)
    hdr = engine.merge_bracket(aligned, [evs[i] for i in chosen], reference=1, progress=report,
                               should_cancel=should_cancel, pipeline=pipeline, **options)
    return hdr, dict(reference=reference, merged=chosen, shifts=[list(s) for s in shifts],
                     seed=options["seed"], device=options["device"])
