"""Job kinds -> engine calls: validation before work, progress, cancel, warm pipelines, errors.

``JobRunner.check`` does the file-system checks a job must pass before it is ``accepted``
(input files exist, the output folder is writable); ``JobRunner.run`` calls the kind's handler
with ``progress(stage, step, total)`` and ``should_cancel()``; ``JobRunner.failure`` maps any
exception to a protocol error code and message. Engines are imported inside the handlers, so
importing this module costs nothing (no numpy, no torch): the server says ``ready`` at once.
"""

from __future__ import annotations

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
from typing import Any, Callable

from .errors import BadInput, BadRequest, LediffError, MissingWeights
from .hdr.atomic import check_writable_output
from .protocol import FILE, FILES, Job

__all__ = ["JobRunner", "PipelineCache", "available_devices"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]
CacheKey = tuple[tuple[str, ...], str, str]  # (model folders, device, dtype)

OOM_ADVICE = ("out of GPU memory: try a smaller width, device 'cpu', or CPU offload; "
              "cached pipelines were released")


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
        """Drop every pipeline; empty torch's CUDA cache if torch is loaded (never import it)."""
        with self._lock:
            self._items.clear()
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
            "panorama": self._neural,
            "text2hdr": self._neural,
        }

    def resolved_device(self) -> str:
        return available_devices()[0] if self.device == "auto" else self.device

    def check(self, job: Job) -> Job:
        """The checks before ``accepted``: input files exist, output folder writable (BadInput)."""
        for name, path in job.paths(FILE, FILES):
            if not os.path.isfile(path):
                raise BadInput(f"{job.kind}: '{name}' is not a file: {path}")
            if not os.access(path, os.R_OK):
                raise BadInput(f"{job.kind}: '{name}' is not readable: {path}")
        if job.output is not None:
            check_writable_output(job.output)
        return job

    def run(self, job: Job, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        """Run ``job``; returns the result's meta dict. Raises LediffError or anything else."""
        return self._handlers[job.kind](job, progress, should_cancel)

    def failure(self, exc: BaseException) -> tuple[str, str]:
        """(protocol error code, message) for an exception a job raised; frees memory on OOM."""
        if isinstance(exc, LediffError):
            return exc.code, str(exc) or exc.code
        if _is_cuda_oom(exc) or isinstance(exc, MemoryError):
            self.cache.release()
            return "out_of_memory", OOM_ADVICE if _is_cuda_oom(exc) else "out of memory: try a smaller width"
        log.error("job failed", exc_info=exc)
        return "internal", f"{type(exc).__name__}: {exc}"

    # Handlers ---------------------------------------------------------------------------------

    def _convert(self, job: Job, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        from .convert import convert_file

        p = job.params
        return convert_file(
            p["input"], job.output, engine=p.get("engine", "auto"), width=p.get("width"),
            half=p.get("half", False), sun_ev=p.get("sun_ev"), progress=progress,
            should_cancel=should_cancel,
        )

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
        raise BadRequest("merge: the bracket merge engine is not part of this backend yet; "
                         "merge the brackets elsewhere and submit a 'convert' or 'sun' job")

    def _neural(self, job: Job, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        from .weights import find_lediff_folders, models_root

        root = models_root(job.params.get("model_dir") or self.model_dir)
        find_lediff_folders(root)  # MissingWeights naming what to download and where to put it
        needs = " and MVDiffusion's pano.ckpt" if job.kind == "panorama" else ""
        raise MissingWeights(
            f"{job.kind}: the LEDiff models in {root} are complete, but this backend has no neural "
            f"{job.kind} pipeline yet (it will also need the neural extra, "
            f"pip install 'lediff-backend[neural]'{needs}); use a 'convert' job meanwhile"
        )
