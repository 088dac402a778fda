"""Write trained weights as an official LEDiff model folder, which the pipelines load unchanged.

The official layout (see ``weights.py``): a diffusers Stable Diffusion folder whose ``unet/``
takes 8 input channels (noisy + condition latent), whose ``vae/`` decoder outputs log-HDR, plus
the latent fusion weights ``vae/merge_model.pth`` (a plain state dict). ``export_lediff_folder``
saves the trained components and copies the rest from existing folders, builds the result
beside the target, checks it with ``weights.check_lediff_folder`` and only then moves it into
place: a failed export never leaves a half-written model behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from .. import weights
from ..models.fusion import LatentFusion

__all__ = ["FUSION_FILE", "fusion_of", "export_lediff_folder"]

FUSION_FILE = "vae/merge_model.pth"  # the official name; weights.py also reads other names


def fusion_of(folder: Path) -> LatentFusion:
    """The fusion weights of ``folder``, or the untrained fusion (the bracket mean) if it has none."""
    return weights.load_fusion(folder) if weights.fusion_weights_path(folder) else LatentFusion()


def export_lediff_folder(
    folder: str | os.PathLike,
    base: str | os.PathLike,
    *,
    unet: torch.nn.Module | None = None,
    vae: torch.nn.Module | None = None,
    fusion: LatentFusion | None = None,
    vae_from: str | os.PathLike | None = None,
) -> Path:
    """Write a complete LEDiff folder at ``folder`` (replacing what is there); return its path.

    ``unet``, ``vae`` and ``fusion`` are the trained modules, saved as given (safetensors for
    the diffusers models, the official ``.pth`` for the fusion). What is not given is copied:
    ``vae/`` and the fusion weights from ``vae_from`` (default ``base``; a folder without fusion
    weights gives the untrained fusion), everything else (``unet/``, text encoder, tokenizer,
    scheduler, ``model_index.json``, any other component) from ``base``. ``base``'s unet must
    then already have 8 input channels.
    """
    folder, base = Path(folder).absolute(), Path(base).absolute()
    vae_from = Path(vae_from).absolute() if vae_from else base
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(base, staging, ignore=lambda at, names: ["unet", "vae"] if Path(at) == base else [])
        if unet is not None:
            unet.save_pretrained(staging / "unet", safe_serialization=True)
        else:
            shutil.copytree(base / "unet", staging / "unet")
        if vae is not None:
            vae.save_pretrained(staging / "vae", safe_serialization=True)
        else:
            shutil.copytree(vae_from / "vae", staging / "vae", ignore=shutil.ignore_patterns("merge_model.*"))
        shutil.rmtree(staging / "merge_model", ignore_errors=True)  # the fusion lives in vae/ only
        fusion = fusion if fusion is not None else fusion_of(vae_from)
        torch.save({k: v.detach().cpu().float() for k, v in fusion.state_dict().items()}, staging / FUSION_FILE)
        weights.check_lediff_folder(staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
