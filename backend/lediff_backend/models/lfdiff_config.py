"""The sizes of LF-Diff's networks and diffusion (``models/lfdiff.py``); no torch needed.

Kept apart from the networks so that checking a model folder's ``config.json``
(``lfdiff_weights.check_lfdiff_folder``, ``lediff models list``) does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

__all__ = ["LFDiffConfig"]


@dataclass(frozen=True)
class LFDiffConfig:
    """Every size of the three networks and the diffusion; the defaults are the paper's."""

    channels: int = 60  # C: DHRNet's feature channels
    blocks: tuple[int, ...] = (3, 3, 3)  # FRMs per reconstruction block (one PIM before each)
    heads: int = 6  # self-attention heads of the FRMs (PIM's cross-attention has one)
    ffn_expansion: float = 2.66
    frm_pool: int = 2  # FRM's average pooling; PIM pools by ``unshuffle``, the prior's grid
    gate_reduction: int = 4  # channel attention squeeze factor (not in the paper)
    unshuffle: int = 4  # k: PixelUnshuffle factor, the prior is H/k x W/k
    prior_channels: int = 3  # the LPR's channels
    lpenet_blocks: int = 4  # residual blocks of LPENet and of LPENet_DM
    condition_channels: int = 64  # D's channels (not in the paper)
    # U-Net widths per level (not in the paper): chosen so that the denoiser and LPENet_DM add
    # about the 2.2M parameters that Table 3 lists for the diffusion model (7.48M - 5.24M).
    denoiser_channels: tuple[int, ...] = (32, 64, 64)
    denoiser_layers: int = 2  # residual blocks per U-Net level
    norm_groups: int = 8  # the denoiser's GroupNorm groups
    train_timesteps: int = 200  # T
    sampling_steps: int = 10  # S, in training (stage two) and inference
    # A linear β schedule: DDPM's 1e-4 .. 0.02 over 1000 steps rescaled to T steps, so z_T is
    # noise (ᾱ_T ≈ e^-10) as in DDPM (not in the paper).
    beta_start: float = 5e-4
    beta_end: float = 0.1
    mu: float = 5000.0  # μ of the tone mapping T

    def __post_init__(self):
        if self.channels % self.heads:
            raise ValueError(f"channels ({self.channels}) must be a multiple of heads ({self.heads})")
        if any(c % self.norm_groups for c in self.denoiser_channels):
            raise ValueError(f"denoiser_channels {self.denoiser_channels} must be multiples of norm_groups")

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this: PixelUnshuffle, FRM pooling, the U-Net's levels."""
        return math.lcm(self.unshuffle * 2 ** (len(self.denoiser_channels) - 1), self.frm_pool)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "LFDiffConfig":
        """The config of a JSON object; ValueError names unknown keys (missing ones take defaults)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LF-Diff config key(s) {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
