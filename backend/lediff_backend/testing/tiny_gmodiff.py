"""A tiny random-init GMODiff in the official layout, on a tiny Stable Diffusion 2 base.

``write_tiny_gmodiff(folder, seed, base)`` writes ``folder/model_zoo/dareg_mask.pth`` (a
training checkpoint ``{"state_dict", "epoch"}`` whose keys carry DataParallel's ``module.``
prefix, as the official file's may) and ``folder/model_zoo/gmodiff.pkl`` (with the condition
VAE's unused decoder skips, as the official file has), for the diffusers folder ``base``
(default: ``sd21-base`` beside ``folder``). The networks are the official ones at a small size
(``TINY_DAREG``; the prior's widths; LoRA rank ``RANK``), with the adapters' up-projections,
NAFNet's residual scales and the guided skips given small random values, so that every part
changes the result. They load through exactly the code that loads the released files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..gmodiff_weights import CHECKPOINT, DAREG_FILES, gmodiff_checkpoint
from ..models.gmodiff import DaReg, DaRegConfig, MaskVisualFusion, adapt_base_model

__all__ = ["TINY_DAREG", "RANK", "tiny_gmodiff_modules", "write_tiny_gmodiff"]

TINY_DAREG = DaRegConfig(channels=(8, 8, 8, 16, 16), encoder_blocks=(1, 1, 1, 1), decoder_blocks=(1, 1, 1, 1),
                         mask_channels=4)
RANK = 2
_SPREAD = 0.05  # std of the weights that start at zero in the official code


def _perturb(parameters, generator: torch.Generator) -> None:
    with torch.no_grad():
        for p in parameters:
            p.normal_(0.0, _SPREAD, generator=generator)


def tiny_gmodiff_modules(base: str | Path, seed: int = 0) -> dict:
    """Seeded tiny ``dareg``, ``proj``, adapted ``unet``, ``vae`` (with skips) and ``vae_c`` on ``base``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    base = Path(base)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dareg = DaReg(TINY_DAREG)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    vae, vae_c = (AutoencoderKL.from_pretrained(base, subfolder="vae") for _ in range(2))
    proj = MaskVisualFusion(TINY_DAREG.channels[-1], (8, 16), 16, unet.config.cross_attention_dim)
    adapt_base_model(unet, vae, vae_c, RANK, generator)
    _perturb([p for n, p in dareg.named_parameters() if n.endswith(("beta", "gamma"))], generator)
    for model in (unet, vae, vae_c):
        _perturb([p for n, p in model.named_parameters() if ".lora_B." in n], generator)
    _perturb([p for n, p in vae.named_parameters() if "skip_conv_" in n and "conv1" in n], generator)
    return dict(dareg=dareg, proj=proj, unet=unet, vae=vae, vae_c=vae_c)


def write_tiny_gmodiff(folder: str | Path, seed: int = 0, base: str | Path | None = None) -> Path:
    """Write the tiny model's two official files into ``folder``; return ``folder``."""
    folder = Path(folder)
    parts = tiny_gmodiff_modules(base or folder.parent / "sd21-base", seed)
    dareg_path = folder / DAREG_FILES[1]
    dareg_path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"module.{k}": v for k, v in parts["dareg"].state_dict().items()}
    torch.save({"state_dict": state, "epoch": 1}, dareg_path)
    checkpoint = gmodiff_checkpoint(parts["unet"], parts["vae"], parts["vae_c"], parts["proj"])
    skips = {k: v for k, v in checkpoint["state_dict_vae"].items() if k.endswith(".conv1.base_layer.weight")}
    checkpoint["state_dict_vae_c"].update({k.replace(".conv1.base_layer", ""): torch.zeros_like(v)
                                           for k, v in skips.items()})
    torch.save(checkpoint, folder / CHECKPOINT)
    return folder
