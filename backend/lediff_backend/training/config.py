"""Training configurations: JSON defaults per recipe, a user's file, command-line overrides.

``configs/decoder.json``, ``configs/denoiser.json`` (highlight and shadow), ``configs/lfdiff.json``
(both LF-Diff stages), ``configs/gmodiff_dareg.json`` and ``configs/gmodiff.json`` (GMODiff's
regression and diffusion stages) hold every default, the paper's values where it gives them
(the official code's, for GMODiff). ``load_config`` merges defaults <- ``--config FILE`` <-
overrides and splits the result into the loop's ``TrainConfig`` (whose ``views`` are the
``ViewSettings`` of the data) and the recipe's own options (``recipe_options`` checks them
against the recipe's dataclass). An unknown key is an error that names it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from typing import TypeVar
from pathlib import Path

from ..errors import BadInput

__all__ = ["RECIPES", "CONFIG_DIR", "ViewSettings", "TrainConfig", "load_config", "recipe_options"]

T = TypeVar("T")

CONFIG_DIR = Path(__file__).parent / "configs"
RECIPES = {
    "decoder": "decoder.json",
    "highlight": "denoiser.json",
    "shadow": "denoiser.json",
    "lfdiff-stage1": "lfdiff.json",
    "lfdiff-stage2": "lfdiff.json",
    "gmodiff-dareg": "gmodiff_dareg.json",
    "gmodiff": "gmodiff.json",
}


@dataclass(frozen=True)
class ViewSettings:
    """How views are cut from the training images.

    ``size``: square view side in pixels. Panoramas: horizontal field of view drawn from
    ``fov_deg`` (degrees), yaw uniform over the circle, pitch uniform in ±``max_pitch_deg``.
    Other images: a square crop whose side is a ``crop_scale`` fraction of the short side.
    """

    size: int = 512
    fov_deg: tuple[float, float] = (60.0, 90.0)
    max_pitch_deg: float = 30.0
    crop_scale: tuple[float, float] = (0.5, 1.0)


@dataclass(frozen=True)
class TrainConfig:
    """What the training loop needs; every value comes from the JSON files (no defaults here)."""

    steps: int  # optimisation steps in all (a resumed run continues up to this count)
    batch_size: int  # brackets per process and micro-batch
    gradient_accumulation_steps: int
    learning_rate: float
    adam_betas: tuple[float, float]
    adam_weight_decay: float
    max_grad_norm: float  # 0 turns clipping off
    mixed_precision: str  # "no", "fp16" (GPU only; "no" on a CPU) or "bf16"
    seed: int
    resolution: int  # view side in pixels
    views_per_image: int  # samples per HDR file
    fov_deg: tuple[float, float]  # horizontal FOV range of panorama views
    max_pitch_deg: float
    crop_scale: tuple[float, float]  # crop side / short side, for non-panoramas
    image_cache: int  # working images kept in memory per data worker
    num_workers: int  # data loader processes
    latent_cache: str | None  # folder of cached latents, or null: encode every batch
    ema_decay: float | None  # null: no EMA; else the exported weights are the EMA
    checkpoint_every: int
    keep_checkpoints: int
    validate_every: int  # 0: no validation images
    validation_samples: int
    log_every: int  # progress lines (the loss log gets every step)

    @property
    def views(self) -> ViewSettings:
        return ViewSettings(self.resolution, tuple(self.fov_deg), self.max_pitch_deg, tuple(self.crop_scale))


def _read(path: str | os.PathLike) -> dict:
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"cannot read the training config {path}: {exc}") from exc
    if not isinstance(values, dict):
        raise BadInput(f"{path}: a training config is a JSON object")
    return values


def load_config(recipe: str, config_file: str | os.PathLike | None = None, **overrides) -> tuple[TrainConfig, dict]:
    """(loop config, recipe options) for ``recipe``; ``overrides`` that are None are ignored."""
    if recipe not in RECIPES:
        raise BadInput(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    defaults = _read(CONFIG_DIR / RECIPES[recipe])
    values = dict(defaults)
    given = _read(config_file) if config_file else {}
    values.update(given)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise BadInput(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(defaults))}")
    loop_keys = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in values.items() if k in loop_keys})
    if config.steps < 1 or config.batch_size < 1 or config.gradient_accumulation_steps < 1:
        raise BadInput("steps, batch_size and gradient_accumulation_steps must be at least 1")
    return config, {k: v for k, v in values.items() if k not in loop_keys}


def recipe_options(cls: type[T], options: dict) -> T:
    """A recipe's options dataclass from the keys ``load_config`` left over; BadInput names a mismatch."""
    names = {f.name for f in fields(cls)}
    unknown, missing = sorted(set(options) - names), sorted(names - set(options))
    if unknown or missing:
        raise BadInput(f"{cls.__name__}: unknown option(s) {unknown}, missing option(s) {missing}")
    return cls(**options)
