"""The LF-Diff model folder: layout, checks, strict loading and saving.

No official LF-Diff weights exist (see ``models/lfdiff.py``), so the folder has our own layout,
written by ``LFDiffPipeline.save_pretrained``, ``lediff train lfdiff-stage1|lfdiff-stage2`` (its
``export/``) and the tiny test models::

    <models root>/lfdiff/
      config.json             {"_class_name": "LFDiffPipeline", "format": 1, ...LFDiffConfig fields}
      condition.safetensors   LPENet_DM with its alignment module (ConditionEncoder)
      denoiser.safetensors    the prior's denoiser (a diffusers UNet2DModel state dict)
      dhrnet.safetensors      DHRNet
      lpenet.safetensors      optional, training only: stage one's prior extractor

A network may instead be a ``.pth`` state dict, read only with ``torch.load(weights_only=True)``;
safetensors wins when both exist. ``config.json`` keys left out take the paper's values.
Checking a folder needs no torch. Loading is strict: every key of the network that
``config.json`` describes must be present with its shape, and nothing else; any problem raises
``errors.MissingWeights`` naming the file and what to place where.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import MissingWeights
from .models.lfdiff_config import LFDiffConfig
from .weights import load_state_dict, models_root

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "FOLDER",
    "REQUIRED",
    "instructions",
    "find_lfdiff_folder",
    "check_lfdiff_folder",
    "read_config",
    "load_lfdiff",
    "save_lfdiff",
]

FOLDER = "lfdiff"  # the model's folder under the models root
CONFIG = "config.json"
CLASS_NAME = "LFDiffPipeline"
FORMAT = 1
REQUIRED = ("condition", "denoiser", "dhrnet")
OPTIONAL = ("lpenet",)
_SUFFIXES = (".safetensors", ".pth")
_LISTED = 8  # keys named per problem


def instructions(folder: Path) -> str:
    """What to do when the folder is missing or broken (there is nothing to download)."""
    return (
        f"No official LF-Diff weights have been released: train them with `lediff train lfdiff-stage1"
        f" --data HDR_DIR --out RUN1` and `lediff train lfdiff-stage2 --model RUN1/export --data HDR_DIR"
        f" --out RUN2`, then place RUN2/export at {folder} (config.json, condition.safetensors,"
        f" denoiser.safetensors, dhrnet.safetensors) or pass --model-dir RUN2/export."
    )


def find_lfdiff_folder(model_dir: str | os.PathLike | None = None) -> Path:
    """The checked LF-Diff folder: ``model_dir`` itself when it holds ``config.json``, else
    ``lfdiff/`` in the models root (``weights.models_root``)."""
    path = models_root(model_dir)
    return check_lfdiff_folder(path if (path / CONFIG).is_file() else path / FOLDER)


def _weights_path(folder: Path, name: str) -> Path | None:
    return next((folder / f"{name}{s}" for s in _SUFFIXES if (folder / f"{name}{s}").is_file()), None)


def _config_problems(folder: Path) -> tuple[LFDiffConfig | None, list[str]]:
    path = folder / CONFIG
    if not path.is_file():
        return None, [f"{path}: missing"]
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{path}: unreadable JSON ({exc})"]
    if not isinstance(values, dict) or values.get("_class_name") != CLASS_NAME:
        return None, [f"{path}: not an LF-Diff config (expected \"_class_name\": \"{CLASS_NAME}\")"]
    if values.get("format") != FORMAT:
        return None, [f"{path}: format {values.get('format')!r}, this backend reads format {FORMAT}"]
    try:
        config = LFDiffConfig.from_dict({k: v for k, v in values.items() if k not in ("_class_name", "format")})
    except (TypeError, ValueError) as exc:
        return None, [f"{path}: {exc}"]
    return config, []


def check_lfdiff_folder(folder: str | os.PathLike) -> Path:
    """Check the layout (config and the three networks' files); return the folder or raise MissingWeights."""
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        problems = [f"{folder}: folder missing"]
    else:
        problems = _config_problems(folder)[1]
        missing = [name for name in REQUIRED if not _weights_path(folder, name)]
        problems += [f"{folder / name}.safetensors: missing (or {name}.pth)" for name in missing]
    if problems:
        lines = "\n  ".join(problems)
        raise MissingWeights(f"LF-Diff model at {folder} is incomplete:\n  {lines}\n{instructions(folder)}")
    return folder


def read_config(folder: str | os.PathLike) -> LFDiffConfig:
    """The ``LFDiffConfig`` of a checked folder."""
    return _config_problems(check_lfdiff_folder(folder))[0]


def _load_strict(module: nn.Module, path: Path) -> None:
    """Fill ``module`` from ``path``: the same keys and shapes, or MissingWeights listing every difference."""
    state = load_state_dict(path)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    kinds = (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
    found = [(what, keys) for what, keys in kinds if keys]
    if found:
        lines = "\n".join(
            f"  {len(keys)} {what}: {', '.join(keys[:_LISTED])}{' ...' if len(keys) > _LISTED else ''}"
            for what, keys in found
        )
        raise MissingWeights(
            f"{path}: not the LF-Diff {path.stem} weights that {path.parent / CONFIG} describes:\n{lines}\n"
            f"{instructions(path.parent)}"
        )
    module.load_state_dict(state, strict=True)


def load_lfdiff(folder: str | os.PathLike) -> tuple[LFDiffConfig, dict[str, nn.Module]]:
    """The config and the networks of a folder, strictly loaded on the CPU in float32, in eval mode.

    ``lpenet`` is among the networks only when the folder has its file.
    """
    from .models.lfdiff import build_networks

    folder = check_lfdiff_folder(folder)
    config = read_config(folder)
    networks = build_networks(config)
    for name in REQUIRED + OPTIONAL:
        path = _weights_path(folder, name)
        if path is None:
            del networks[name]  # only an optional network can be absent after the check
            continue
        _load_strict(networks[name], path)
        networks[name].eval()
    return config, networks


def save_lfdiff(folder: str | os.PathLike, config: LFDiffConfig, networks: dict[str, nn.Module]) -> Path:
    """Write a complete folder at ``folder`` (replacing what is there); return its path.

    ``networks``: the three required ones and optionally ``lpenet``. The folder is built beside
    the target, checked and only then moved into place.
    """
    from safetensors.torch import save_file

    unknown = sorted(set(networks) - set(REQUIRED + OPTIONAL))
    if unknown or not set(REQUIRED) <= set(networks):
        raise ValueError(f"LF-Diff networks are {REQUIRED} (+ {OPTIONAL}), got {sorted(networks)}")
    folder = Path(folder).absolute()
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        values = dict(_class_name=CLASS_NAME, format=FORMAT, **config.to_dict())
        (staging / CONFIG).write_text(json.dumps(values, indent=1), encoding="utf-8")
        for name, module in networks.items():
            state = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
            save_file(state, str(staging / f"{name}.safetensors"))
        check_lfdiff_folder(staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
