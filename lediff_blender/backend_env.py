"""Create the backend's own Python environment: a venv with torch and the bundled backend.

Stdlib only, no bpy (``client`` lends its child-process environment). ``plan`` lists the steps (each one command); ``Builder`` runs them one after
another in a background thread, appending their output to a log file, so Blender stays
responsive and the preferences can show the step, a progress fraction and the log's last lines.

The venv is made by the interpreter running Blender (Blender's bundled Python), so it never
touches Blender's own ``site-packages``. torch comes first, from the PyTorch index of the chosen
build (CPU or one CUDA version): installed after the backend, pip would pick a default build.
The backend is the wheel that ships inside the extension (``backend/*.whl``, see
``scripts/build_extension.py``), or the repository's ``backend/`` folder when the add-on runs
from a checkout.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass

from .client import child_environment

__all__ = ["TORCH_BUILDS", "Step", "plan", "venv_python", "bundled_backend", "Builder"]

# id -> (label, PyTorch wheel index)
TORCH_BUILDS = {
    "cpu": ("CPU only", "https://download.pytorch.org/whl/cpu"),
    "cu124": ("NVIDIA CUDA 12.4", "https://download.pytorch.org/whl/cu124"),
    "cu126": ("NVIDIA CUDA 12.6", "https://download.pytorch.org/whl/cu126"),
    "cu128": ("NVIDIA CUDA 12.8", "https://download.pytorch.org/whl/cu128"),
}
ADDON_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Step:
    title: str
    command: tuple[str, ...]


def venv_python(folder: str) -> str:
    """The interpreter of the venv at ``folder``."""
    if sys.platform == "win32":
        return os.path.join(folder, "Scripts", "python.exe")
    return os.path.join(folder, "bin", "python")


def bundled_backend(addon_dir: str = ADDON_DIR) -> str:
    """What pip installs as the backend: the extension's wheel, or a checkout's ``backend/``."""
    wheels = sorted(glob.glob(os.path.join(addon_dir, "backend", "lediff_backend-*.whl")))
    if wheels:
        return wheels[-1]
    checkout = os.path.join(os.path.dirname(addon_dir), "backend")
    if os.path.isfile(os.path.join(checkout, "pyproject.toml")):
        return checkout
    raise FileNotFoundError(f"no backend wheel in {addon_dir}/backend (rebuild the extension with "
                            "scripts/build_extension.py)")


def plan(folder: str, torch_build: str, backend: str, python: str = sys.executable) -> list[Step]:
    """The steps that make a backend environment in ``folder``."""
    if torch_build not in TORCH_BUILDS:
        raise ValueError(f"unknown torch build {torch_build!r}; choose from {', '.join(TORCH_BUILDS)}")
    pip = (venv_python(folder), "-m", "pip", "install", "--disable-pip-version-check")
    editable = ("-e",) if os.path.isdir(backend) else ()
    return [
        Step("Create the virtual environment", (python, "-m", "venv", folder)),
        Step("Update pip", (*pip, "--upgrade", "pip")),
        Step(f"Install PyTorch ({TORCH_BUILDS[torch_build][0]})",
             (*pip, "torch", "--index-url", TORCH_BUILDS[torch_build][1])),
        Step("Install the LEDiff backend", (*pip, *editable, f"{backend}[neural]")),
        Step("Check the backend", (venv_python(folder), "-m", "lediff_backend.cli", "--help")),
    ]


class Builder:
    """Runs ``steps`` in a background thread; read its state from any thread."""

    def __init__(self, steps: list[Step], log_path: str) -> None:
        self.steps = steps
        self.log_path = log_path
        self.step = 0  # index of the step running (== len(steps) when all passed)
        self.error: str | None = None
        self.finished = threading.Event()
        self._process: subprocess.Popen | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="lediff-backend-env", daemon=True)

    @property
    def fraction(self) -> float:
        return self.step / len(self.steps) if self.steps else 1.0

    @property
    def title(self) -> str:
        if self.error:
            return self.error
        return "Done" if self.step >= len(self.steps) else self.steps[self.step].title

    def start(self) -> Builder:
        os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancelled = True
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def log_tail(self, lines: int = 8) -> list[str]:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return [line.rstrip() for line in deque(log, maxlen=lines)]
        except OSError:
            return []

    def _run(self) -> None:
        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                for index, step in enumerate(self.steps):
                    self.step = index
                    log.write(f"== {index + 1}/{len(self.steps)} {step.title}: {' '.join(step.command)}\n")
                    log.flush()
                    self._process = subprocess.Popen(step.command, stdout=log, stderr=subprocess.STDOUT,
                                                     env=child_environment())
                    if self._cancelled:  # cancelled while the step was starting
                        self._process.terminate()
                    code = self._process.wait()
                    if self._cancelled:
                        self.error = "Cancelled"
                        return
                    if code != 0:
                        self.error = f"{step.title} failed (status {code}); see {self.log_path}"
                        return
                self.step = len(self.steps)
                log.write("== done\n")
        except OSError as exc:
            self.error = f"{self.title} could not run: {exc}"
        finally:
            self.finished.set()
