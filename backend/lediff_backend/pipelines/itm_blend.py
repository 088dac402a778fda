"""Blend a generated HDR with its LDR input where the input is not clipped (the paper's ITM step).

As in the official ITM script (after HDRCNN/MaskHDR): the input's unclipped pixels are
linearised as ``LDR^γ · 2^e`` with (γ, e) fitted to the generated HDR on those pixels by least
squares (γ in [2.4, 2.6]), and a soft mask on the input's brightest channel
(``clip((max_c − 1 + t)/t, 0, 1)``, t = 0.05) keeps the generated HDR only where the input
clipped. When shadows were hallucinated too, the mirror mask on near-black pixels keeps the
generated shadows as well.

Tensors are (N, 3, H, W) float; ``ldr`` is display-encoded in [0, 1], ``hdr`` scene-linear.
"""

from __future__ import annotations

import torch

__all__ = ["clip_mask", "fit_gamma_exposure", "blend_unclipped"]

THRESHOLD = 0.05
GAMMA_RANGE = (2.4, 2.6)


def clip_mask(ldr: torch.Tensor, shadows: bool = False, threshold: float = THRESHOLD) -> torch.Tensor:
    """Soft mask (N, 1, H, W): 1 where the input clipped in highlights (and shadows if asked)."""
    peak = ldr.amax(dim=1, keepdim=True)
    mask = ((peak - 1.0 + threshold) / threshold).clamp(0.0, 1.0)
    if shadows:
        mask = torch.maximum(mask, ((threshold - peak) / threshold).clamp(0.0, 1.0))
    return mask


def fit_gamma_exposure(
    ldr: torch.Tensor, hdr: torch.Tensor, valid: torch.Tensor, steps: int = 21
) -> tuple[float, float]:
    """Least-squares (γ, e) of ``hdr ≈ ldr^γ · 2^e`` over the pixels where ``valid`` (N,1,H,W) is true.

    For each γ on a grid over ``GAMMA_RANGE`` the best scale has a closed form; the pair with the
    smallest residual wins. Returns (2.4, 0.0) when no pixel is valid.
    """
    pick = valid.expand_as(ldr)
    x, y = ldr[pick].double(), hdr[pick].double()
    best = (float("inf"), GAMMA_RANGE[0], 0.0)
    if x.numel() == 0:
        return best[1], best[2]
    for gamma in torch.linspace(*GAMMA_RANGE, steps, dtype=torch.float64):
        xg = x**gamma
        scale = (xg * y).sum() / (xg * xg).sum().clamp_min(1e-30)
        scale = scale.clamp_min(1e-30)
        residual = float(((xg * scale - y) ** 2).sum())
        if residual < best[0]:
            best = (residual, float(gamma), float(torch.log2(scale)))
    return best[1], best[2]


def blend_unclipped(ldr: torch.Tensor, hdr: torch.Tensor, shadows: bool = False) -> torch.Tensor:
    """The generated HDR in clipped regions, the linearised input elsewhere, softly blended."""
    mask = clip_mask(ldr, shadows)
    gamma, exposure = fit_gamma_exposure(ldr, hdr, mask == 0)
    linearised = ldr.clamp(0.0, 1.0) ** gamma * 2.0**exposure
    return (1.0 - mask) * linearised + mask * hdr
