"""GMODiff's official files: the folder, its checks, and strict reading and writing.

The official release (github.com/gbymat/GMODiff, weights on Baidu Netdisk only) is two files,
kept here in their official places under the models root::

    <models root>/gmodiff/model_zoo/dareg_mask.pth   DaReg, stage 2 (with the mask head)
    <models root>/gmodiff/model_zoo/gmodiff.pkl      the diffusion stage
    <models root>/sd21-base/                          Stable Diffusion 2.1 base (diffusers), or
                                                      its hub snapshot in the Hugging Face cache

``dareg_mask.pth`` is a training checkpoint ``{"state_dict": ..., "epoch", "optimizer", ...}``
whose keys may carry DataParallel's ``module.`` prefix (the official loader strips it, so does
``load_dareg``); a ``dareg_mask.safetensors`` beside it (a flat state dict) is read first.
``gmodiff.pkl`` is the official ``GMODiff_train.save_model`` dict:

- ``state_dict_unet``: the UNet's LoRA weights and its 8-channel ``conv_in`` (itself adapted,
  so ``conv_in.base_layer.*``); ``state_dict_vae``: the VAE's LoRA weights and the guided skips
  (``decoder.skip_conv_1..4``); ``state_dict_vae_c``: the condition encoder's LoRA weights (and
  four 1x1 ``decoder.skip_conv_*`` that the official code creates but never uses, ignored);
  ``proj``: ``MaskVisualFusion``;
- ``{unet,vae,vae_c}_lora_*_modules``: the adapted layers of each adapter; ``rank_{unet,vae,vae_c}``.

Reading is strict: every adapted layer must exist, and each state dict must hold exactly the
keys and shapes the official code would save for those layers (``CheckpointError`` lists the
rest). Pickles are read only with ``torch.load(weights_only=True)``. Any problem raises
``errors.MissingWeights`` saying what to place where. Nothing here imports torch at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import weights
from .errors import MissingWeights

__all__ = [
    "FOLDER",
    "BASE",
    "DAREG_FILES",
    "CHECKPOINT",
    "CheckpointError",
    "GMODiffFiles",
    "manual_instructions",
    "check_gmodiff_folder",
    "find_gmodiff",
    "load_dareg",
    "save_dareg",
    "read_gmodiff_checkpoint",
    "load_gmodiff_checkpoint",
    "gmodiff_checkpoint",
]

FOLDER = "gmodiff"  # weights.MODELS name and folder under the models root
BASE = "sd21-base"  # weights.MODELS name of the Stable Diffusion 2.1 base
DAREG_FILES = ("model_zoo/dareg_mask.safetensors", "model_zoo/dareg_mask.pth")
CHECKPOINT = "model_zoo/gmodiff.pkl"
# adapters: checkpoint list key -> (component, PEFT adapter name, rank key)
ADAPTERS = {
    "unet_lora_encoder_modules": ("unet", "default_encoder", "rank_unet"),
    "unet_lora_decoder_modules": ("unet", "default_decoder", "rank_unet"),
    "unet_lora_others_modules": ("unet", "default_others", "rank_unet"),
    "vae_lora_encoder_modules": ("vae", "default_encoder", "rank_vae"),
    "vae_lora_decoder_modules": ("vae", "default_decoder", "rank_vae"),
    "vae_c_lora_encoder_modules": ("vae_c", "default_encoder", "rank_vae_c"),
}
# component -> (its state dict in the checkpoint, substrings of the keys the official code saves)
SECTIONS = {
    "unet": ("state_dict_unet", ("lora", "conv_in")),
    "vae": ("state_dict_vae", ("lora", "skip")),
    "vae_c": ("state_dict_vae_c", ("lora",)),
}
_UNUSED_VAE_C = "decoder.skip_conv_"  # official initialize_vae1's decoder skips: saved, never used
_LISTED = 8  # keys named per problem


class CheckpointError(MissingWeights):
    """A checkpoint's keys or shapes are not those of the official GMODiff networks."""


@dataclass(frozen=True)
class GMODiffFiles:
    """The files of one GMODiff model: the two official checkpoints and the SD 2.1 base folder."""

    folder: Path
    dareg: Path
    checkpoint: Path
    base: Path


def manual_instructions(root: str | os.PathLike, folder: Path | None = None) -> str:
    """What to download and where to place it (the release has no scripted download)."""
    spec, base = weights.MODELS[FOLDER], weights.MODELS[BASE]
    folder = folder or Path(root) / FOLDER
    return (
        f"To install {spec.title}: download dareg_mask.pth and gmodiff.pkl from the official release"
        f" {spec.url} (Baidu Netdisk) and place them at {folder / 'model_zoo/dareg_mask.pth'} and"
        f" {folder / CHECKPOINT} (the official test script calls the latter gmodiff_81000.pkl: rename it)."
        f" GMODiff also needs {base.title}: a diffusers folder at {Path(root) / BASE} or {base.hub_id} in the"
        f" Hugging Face cache (lediff models download {BASE}; the official README notes that this repository"
        f" no longer serves the weights and names the copy Manojb/stable-diffusion-2-1-base)."
    )


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def check_gmodiff_folder(folder: str | os.PathLike) -> Path:
    """Check the two official files in ``folder``; return it, or raise MissingWeights listing what is missing."""
    folder = Path(folder).expanduser().absolute()
    problems = []
    if not folder.is_dir():
        problems.append(f"{folder}: folder missing")
    else:
        if _first(folder, DAREG_FILES) is None:
            problems.append(f"{folder / DAREG_FILES[1]}: missing (DaReg, the regression stage)")
        if not (folder / CHECKPOINT).is_file():
            problems.append(f"{folder / CHECKPOINT}: missing (the diffusion stage)")
    if problems:
        lines = "\n  ".join(problems)
        raise MissingWeights(f"{weights.MODELS[FOLDER].title} at {folder} is incomplete:\n  {lines}\n"
                             f"{manual_instructions(folder.parent, folder)}")
    return folder


def find_gmodiff(model_dir: str | os.PathLike | None = None,
                 base_model_dir: str | os.PathLike | None = None) -> GMODiffFiles:
    """The checked GMODiff files: ``model_dir`` is the models root (``gmodiff/`` and ``sd21-base/``
    inside it) or GMODiff's own folder (the one holding ``model_zoo/``; ``sd21-base/`` is then
    looked for beside it). ``base_model_dir`` names the SD 2.1 base folder explicitly; without
    one the hub snapshot in the Hugging Face cache also serves."""
    path = weights.models_root(model_dir)
    folder, root = (path, path.parent) if (path / "model_zoo").is_dir() else (path / FOLDER, path)
    if not folder.exists():
        raise MissingWeights(f"no {weights.MODELS[FOLDER].title} in {path}.\n{manual_instructions(root)}")
    check_gmodiff_folder(folder)
    base = weights.find_sd_folder(BASE, base_model_dir, root)
    return GMODiffFiles(folder, _first(folder, DAREG_FILES), folder / CHECKPOINT, base)


# -- strict reading --------------------------------------------------------------------------------


def _problems(expected: dict, given: dict) -> list[str]:
    """Missing, unknown and misshapen keys of ``given`` against ``expected`` (key -> tensor), one line each."""
    missing = [k for k in expected if k not in given]
    unknown = [k for k in given if k not in expected]
    misshapen = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
                 for k, v in given.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    return [f"{len(found)} {what}: {', '.join(found[:_LISTED])}{' ...' if len(found) > _LISTED else ''}"
            for what, found in (("missing keys", missing), ("unknown keys", unknown), ("wrong shapes", misshapen))
            if found]


def _error(path: Path, what: str, problems: list[str]) -> CheckpointError:
    lines = "\n  ".join(problems)
    return CheckpointError(f"{path}: not the official {what}:\n  {lines}\n"
                           f"Place the official file there ({weights.MODELS[FOLDER].url}).")


def _raise_problems(path: Path, what: str, problems: list[str]) -> None:
    if problems:
        raise _error(path, what, problems)


def load_dareg(path: str | os.PathLike):
    """The ``DaReg`` of a ``dareg_mask`` file (its size read from the keys), loaded strictly, in eval mode."""
    from .mvdiffusion_weights import read_checkpoint
    from .models.gmodiff import DaReg, DaRegConfig

    path = Path(path)
    # safetensors: a flat state dict; a pickle: {"state_dict": ...} or a bare one, weights only
    state = weights.load_state_dict(path) if path.suffix == ".safetensors" else read_checkpoint(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = DaReg(DaRegConfig.from_state_dict(state))
    _raise_problems(path, "DaReg weights (dareg_mask.pth)", _problems(model.state_dict(), state))
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def save_dareg(model, path: str | os.PathLike) -> Path:
    """Write ``model`` as the official ``dareg_mask.pth`` does: ``{"state_dict": ...}`` (no prefixes)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)
    return path


def read_gmodiff_checkpoint(path: str | os.PathLike) -> dict:
    """The official ``gmodiff.pkl`` dict, its structure checked (not yet its keys: ``load_gmodiff_checkpoint``)."""
    import torch

    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a pickle we will not read
        raise MissingWeights(f"{path}: cannot be read as a checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: holds a {type(checkpoint).__name__}, expected the official GMODiff dict")
    wanted = {**{k: list for k in ADAPTERS}, **{s: dict for s, _ in SECTIONS.values()}, "proj": dict,
              **{rank: int for _, _, rank in ADAPTERS.values()}}
    wrong = [f"{k} (missing)" if k not in checkpoint else f"{k} (a {type(checkpoint[k]).__name__})"
             for k, kind in wanted.items() if not isinstance(checkpoint.get(k), kind)]
    _raise_problems(path, "GMODiff checkpoint (gmodiff.pkl)", [f"entries: {', '.join(wrong)}"] if wrong else [])
    return checkpoint


def load_gmodiff_checkpoint(checkpoint: dict, unet, vae, vae_c, path: str | os.PathLike = CHECKPOINT):
    """Fill SD 2.1 base modules with a ``read_gmodiff_checkpoint`` dict; return the ``MaskVisualFusion``.

    ``unet`` (4 input channels, as in the base folder) gets the checkpoint's 8-channel ``conv_in``,
    ``vae`` the guided skips, and all three the adapters the checkpoint lists (as
    ``models.lora.LoraLayer``: merge them for inference).
    """
    from .models.gmodiff import MaskVisualFusion, attach_guided_skips, widen_conv_in
    from .models.lora import add_lora

    path = Path(path)
    proj = MaskVisualFusion.from_state_dict(checkpoint["proj"])
    _raise_problems(path, "GMODiff prior module (proj)", _problems(proj.state_dict(), checkpoint["proj"]))
    proj.load_state_dict(checkpoint["proj"])
    widen_conv_in(unet)  # its weights come from the checkpoint
    attach_guided_skips(vae, proj.mlp[2].out_features)
    modules = {"unet": unet, "vae": vae, "vae_c": vae_c}
    for key, (component, adapter, rank) in ADAPTERS.items():
        try:
            add_lora(modules[component], checkpoint[key], adapter, checkpoint[rank])
        except (KeyError, TypeError) as exc:
            raise _error(path, "GMODiff checkpoint (gmodiff.pkl)",
                         [f"{key} names a layer that the {component} of {BASE} lacks or cannot adapt: {exc}"]) from exc
    for component, (section, tags) in SECTIONS.items():
        module, given = modules[component], checkpoint[section]
        if component == "vae_c":
            given = {k: v for k, v in given.items() if not k.startswith(_UNUSED_VAE_C)}
        expected = {k: v for k, v in module.state_dict().items() if any(t in k for t in tags)}
        _raise_problems(path, f"GMODiff checkpoint (gmodiff.pkl, {section})", _problems(expected, given))
        module.load_state_dict(given, strict=False)
    return proj


def gmodiff_checkpoint(unet, vae, vae_c, proj) -> dict:
    """Adapted modules as the official ``gmodiff.pkl`` dict (the layout ``GMODiff_test`` loads);
    ``torch.save`` it. The adapter lists and ranks are read from the ``LoraLayer`` wrappers."""
    from .models.lora import LoraLayer

    modules = {"unet": unet, "vae": vae, "vae_c": vae_c}
    checkpoint: dict = {}
    for key, (component, adapter, rank) in ADAPTERS.items():
        layers = [(n, m) for n, m in modules[component].named_modules()
                  if isinstance(m, LoraLayer) and adapter in m.lora_A]
        checkpoint[key] = [n for n, _ in layers]
        if layers:
            checkpoint[rank] = layers[0][1].lora_A[adapter].weight.shape[0]
    for component, (section, tags) in SECTIONS.items():
        state = modules[component].state_dict()
        checkpoint[section] = {k: v.detach().cpu() for k, v in state.items() if any(t in k for t in tags)}
    checkpoint["proj"] = {k: v.detach().cpu() for k, v in proj.state_dict().items()}
    return checkpoint
