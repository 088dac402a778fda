"""Job kinds -> engine calls: validation before work, progress, cancel, warm pipelines, errors.

``JobRunner.check`` does the file-system checks a job must pass before it is ``accepted``
(input files exist, the output folder is writable); ``JobRunner.run`` calls the kind's handler
with ``progress(stage, step, total, preview=None)`` and ``should_cancel()``; ``JobRunner.failure``
maps any exception to a protocol error code and message. Engines are imported inside the
handlers, so importing this module costs nothing (no numpy, no torch): the server says ``ready``
at once.

Neural jobs (``convert`` when its engine resolves to ``lediff``, ``text2hdr``) take their
pipeline from ``PipelineCache``, keyed by (resolved model folders, device, dtype); a job that has
to load one reports a ``load`` stage first, a warm job does not. ``should_cancel`` is polled after
every denoising step. With ``preview_every`` > 0 the job rewrites ``<output stem>.preview.png``
beside its output every that many steps and announces it in a progress event carrying
``preview`` (the same stage, step and total as the step's own event); the preview is a working
file: it is deleted when the job ends, however it ends. ``panorama`` (text -> HDR panorama) needs
MVDiffusion, which is not built yet, and says so.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import logging
import os
import platform
import re
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import BadInput, LediffError, MissingWeights, OutOfMemory
from .protocol import FILE, FILES, Job

__all__ = ["JobRunner", "PipelineCache", "available_devices"]

log = logging.getLogger(__name__)

ProgressFn = Callable[..., None]  # (stage, step, total, preview: str | None = None)
CancelFn = Callable[[], bool]
CacheKey = tuple[tuple[str, ...], str, str]  # (model folders, device, dtype)

OOM_ADVICE = ("out of GPU memory: try a smaller width, device 'cpu', or CPU offload; "
              "cached pipelines were released")
NEURAL_EXTRA = "pip install 'lediff-backend[neural]' (after torch for your GPU, see README)"
LEDIFF_OPTIONS = ("steps", "seed", "guidance")  # job params handed to the engine as they are


@functools.cache
def available_devices() -> list[str]:
    """Devices a job can use, best first, found without importing torch (that takes seconds).

    ``cuda`` needs a CUDA build of torch (read from ``torch/version.py``) and an NVIDIA driver;
    ``mps`` needs torch on Apple silicon. ``cpu`` is always there (the classic engine's device).
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        found = ["cuda"] if torch.cuda.is_available() else []
        found += ["mps"] if torch.backends.mps.is_available() else []
        return found + ["cpu"]
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return ["cpu"]
    version = Path(spec.submodule_search_locations[0], "version.py")
    text = version.read_text(encoding="utf-8") if version.is_file() else ""
    cuda_build = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]", text, re.MULTILINE) is not None
    windows_driver = Path(os.environ.get("SystemRoot", r"C:\Windows"), "System32", "nvcuda.dll")
    driver = Path("/dev/nvidiactl").exists() or (sys.platform == "win32" and windows_driver.exists())
    found = ["cuda"] if cuda_build and driver else []
    found += ["mps"] if sys.platform == "darwin" and platform.machine() == "arm64" else []
    return found + ["cpu"]


class PipelineCache:
    """Loaded pipelines kept warm between jobs, keyed by (model folders, device, dtype)."""

    def __init__(self) -> None:
        self._items: dict[CacheKey, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: CacheKey, load: Callable[[], Any]) -> Any:
        """The cached pipeline for ``key``, loading it with ``load()`` the first time."""
        with self._lock:
            if key in self._items:
                return self._items[key]
        pipeline = load()
        with self._lock:
            return self._items.setdefault(key, pipeline)

    def loaded(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"models": list(m), "device": d, "dtype": t} for m, d, t in self._items]

    def release(self) -> None:
        """Drop every pipeline and projection's kept lookups; empty torch's CUDA cache if torch is
        loaded (never import it)."""
        from .hdr.projection import clear_caches

        with self._lock:
            self._items.clear()
        clear_caches()
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def _is_cuda_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


class JobRunner:
    """Runs jobs of every kind in DESIGN.md; ``model_dir`` (default: ``weights.models_root``)
    and ``device`` are the defaults for jobs that do not name their own."""

    def __init__(self, model_dir: str | None = None, device: str = "auto") -> None:
        self.model_dir = model_dir
        self.device = device
        self.cache = PipelineCache()
        self._handlers: dict[str, Callable[[Job, ProgressFn, CancelFn], dict]] = {
            "convert": self._convert,
            "sun": self._sun,
            "merge": self._merge,
            "panorama": self._panorama,
            "text2hdr": self._text2hdr,
        }

    def resolved_device(self) -> str:
        return available_devices()[0] if self.device == "auto" else self.device

    def check(self, job: Job) -> Job:
        """The checks before ``accepted``: input files exist, output writable as an image (BadInput)."""
        from .hdr.imageio import check_image_output  # numpy and OpenEXR: not at the server's start-up

        for name, path in job.paths(FILE, FILES):
            if not os.path.isfile(path):
                raise BadInput(f"{job.kind}: '{name}' is not a file: {path}")
            if not os.access(path, os.R_OK):
                raise BadInput(f"{job.kind}: '{name}' is not readable: {path}")
        if job.output is not None:
            check_image_output(job.output)
        return job

    def run(self, job: Job, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        """Run ``job``; returns the result's meta dict. Raises LediffError or anything else."""
        return self._handlers[job.kind](job, progress, should_cancel)

    def failure(self, exc: BaseException) -> tuple[str, str]:
        """(protocol error code, message) for an exception a job raised; frees memory on OOM."""
        gpu_oom = isinstance(exc, OutOfMemory) or _is_cuda_oom(exc)
        if gpu_oom or isinstance(exc, MemoryError):
            self.cache.release()
            return "out_of_memory", OOM_ADVICE if gpu_oom else "out of memory: try a smaller width"
        if isinstance(exc, LediffError):
            return exc.code, str(exc) or exc.code
        log.error("job failed", exc_info=exc)
        return "internal", f"{type(exc).__name__}: {exc}"

    # Handlers ---------------------------------------------------------------------------------

    def _convert(self, job: Job, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        from .convert import convert_file, resolve_engine

        p = job.params
        engine = resolve_engine(p.get("engine", "auto"), self._model_dir(p))
        run = functools.partial(convert_file, p["input"], job.output, engine=engine, width=p.get("width"),
                                half=p.get("half", False), sun_ev=p.get("sun_ev"))
        if engine != "lediff":
            return run(progress=progress, should_cancel=should_cancel)
        with self._lediff_options(job, progress, should_cancel) as options:
            return run(**options)

    def _sun(self, job: Job, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        from .hdr.imageio import read_image
        from .hdr.summary import summarize

        path = job.params["input"]
        progress("read", 0, 2)
        image = read_image(path)
        if not image.is_hdr:
            raise BadInput(f"sun: {path} is not HDR (EXR or Radiance .hdr)")
        progress("sun", 1, 2)
        meta = summarize(image.pixels)
        if "sun" not in meta:
            raise BadInput(f"sun: {path} is not a 2:1 equirect panorama with light in it")
        progress("sun", 2, 2)
        return meta

    def _merge(self, job: Job, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        from .merge import merge_files

        p = job.params
        return merge_files(p["inputs"], job.output, evs=p.get("ev"), engine=p.get("engine", "auto"),
                           reference=p.get("reference"), response=p.get("response"), half=p.get("half", False),
                           model_dir=self._model_dir(p), device=p.get("device") or self.device, seed=p.get("seed", 0),
                           progress=progress, should_cancel=should_cancel, warm=self.cache.get)

    def _text2hdr(self, job: Job, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        from .convert import write_result
        from .hdr.summary import summarize

        p = job.params
        with self._lediff_options(job, progress, should_cancel, text2hdr=True) as options:
            hdr = _lediff_engine().lediff_text2hdr(p["prompt"], width=p.get("width", 512),
                                                    height=p.get("height", 512), **options)
        meta = {**summarize(hdr), "engine": "lediff", "prompt": p["prompt"]}
        write_result(job.output, hdr, meta)
        return {**meta, "output": job.output}

    def _panorama(self, job: Job, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        from .convert import write_result
        from .hdr.summary import summarize

        p = job.params
        pipeline = self._panorama_pipeline(p, progress)
        with self._neural_options(job, progress, should_cancel, pipeline) as options:
            hdr = _engine_module("hdr_panorama").lediff_panorama(
                p["prompt"], image=p.get("image"), width=p.get("width", 2048), **options)
        meta = {**summarize(hdr, panorama=True), "engine": "mvdiffusion+lediff", "prompt": p["prompt"]}
        write_result(job.output, hdr, meta)
        return {**meta, "output": job.output}

    # LEDiff runs ------------------------------------------------------------------------------

    def _model_dir(self, params: dict[str, Any]) -> str | None:
        return params.get("model_dir") or self.model_dir

    @contextlib.contextmanager
    def _lediff_options(self, job: Job, progress: ProgressFn, should_cancel: CancelFn, *,
                        text2hdr: bool = False) -> Iterator[dict[str, Any]]:
        """The LEDiff engine options of a job, with its warm pipeline (see ``_neural_options``)."""
        pipeline = self._lediff_pipeline(job.params, progress, text2hdr)
        with self._neural_options(job, progress, should_cancel, pipeline) as options:
            yield options

    @contextlib.contextmanager
    def _neural_options(self, job: Job, progress: ProgressFn, should_cancel: CancelFn,
                        pipeline: Any) -> Iterator[dict[str, Any]]:
        """A neural job's engine options: ``pipeline``, its own steps/seed/guidance, progress,
        cancel and previews. The preview file goes when the job ends, whichever way."""
        p = job.params
        previews = _Previews(job.output, progress)
        every = max(p.get("preview_every") or 0, 0)
        options = {name: p[name] for name in LEDIFF_OPTIONS if name in p}
        options.update(pipeline=pipeline, progress=previews.progress,
                       should_cancel=should_cancel, preview=previews.show if every else None,
                       preview_every=every)
        try:
            yield options
        finally:
            previews.remove()

    def _lediff_pipeline(self, params: dict[str, Any], progress: ProgressFn, text2hdr: bool) -> Any:
        """The warm LEDiff pipeline for these folders, device and dtype, loaded on first use."""
        from .weights import find_base_sd, find_lediff_folders

        engine = _lediff_engine()
        model_dir, shadow_dir = self._model_dir(params), params.get("shadow_model_dir")
        found = find_lediff_folders(model_dir, shadow_dir)  # MissingWeights naming the folder
        base = find_base_sd(None, model_dir) if text2hdr else None
        device = self._torch_device(params.get("device") or self.device)
        dtype = engine.default_dtype(device)
        folders = tuple(str(f) for f in (found.highlight, found.shadow, base) if f is not None)

        def load() -> Any:
            progress("load", 0, 1)
            pipeline = engine.load_lediff_pipeline(model_dir, shadow_dir, device, dtype, text2hdr=text2hdr,
                                                   base_model_dir=base)
            progress("load", 1, 1)
            return pipeline

        return self.cache.get((folders, str(device), str(dtype).removeprefix("torch.")), load)

    def _panorama_pipeline(self, params: dict[str, Any], progress: ProgressFn) -> Any:
        """The warm MVDiffusion + LEDiff pipelines for these folders, device and dtype."""
        from .weights import find_lediff_folders, find_mvdiffusion

        model_dir, shadow_dir = self._model_dir(params), params.get("shadow_model_dir")
        found = find_lediff_folders(model_dir, shadow_dir)  # MissingWeights naming the folder
        mvdiffusion = find_mvdiffusion(model_dir)
        device = self._torch_device(params.get("device") or self.device)
        dtype = _lediff_engine().default_dtype(device)
        folders = tuple(str(f) for f in (mvdiffusion, found.highlight, found.shadow) if f is not None)

        def load() -> Any:
            progress("load", 0, 1)
            pipeline = _engine_module("hdr_panorama").load_panorama_pipeline(
                model_dir, device, dtype, shadow_model_dir=shadow_dir)
            progress("load", 1, 1)
            return pipeline

        return self.cache.get((folders, str(device), str(dtype).removeprefix("torch.")), load)

    @staticmethod
    def _torch_device(name: str) -> Any:
        """``name`` as a torch device this machine has (``auto``: the best one), else BadInput."""
        try:
            device = _lediff_engine().resolve_device(name)
        except RuntimeError as exc:
            raise BadInput(f"unknown device {name!r}: {exc}") from None
        if device.type not in available_devices():
            raise BadInput(f"device {name!r} is not available here; available: {', '.join(available_devices())}")
        return device


def _engine_module(name: str) -> Any:
    """A neural engine module of ``pipelines`` (imports torch and diffusers), or MissingWeights
    saying what to install."""
    try:
        return importlib.import_module(f"lediff_backend.pipelines.{name}")
    except ImportError as exc:
        raise MissingWeights(f"the neural engines need torch and diffusers ({exc}): {NEURAL_EXTRA}") from exc


def _lediff_engine() -> Any:
    return _engine_module("lediff_engine")


class _Previews:
    """A neural job's preview PNG, ``<output stem>.preview.png`` beside its output.

    ``progress`` passes step events through and remembers the total; ``show`` writes the PNG
    (atomically) and sends a progress event with its path; ``remove`` deletes it if it was written.
    """

    def __init__(self, output: str, progress: ProgressFn) -> None:
        self.path = Path(output).with_suffix(".preview.png")
        self._progress = progress
        self._total = 0
        self._written = False

    def progress(self, stage: str, step: int, total: int) -> None:
        self._total = total
        self._progress(stage, step, total)

    def show(self, stage: str, step: int, rgb: Any) -> None:
        from .hdr.ldr import write_png

        write_png(self.path, rgb)
        self._written = True
        self._progress(stage, step, self._total, preview=str(self.path))

    def remove(self) -> None:
        if self._written:
            self.path.unlink(missing_ok=True)
