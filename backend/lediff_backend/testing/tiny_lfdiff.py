"""A tiny random-init LF-Diff folder in our layout (``lfdiff_weights``), for tests.

The same code as the paper-sized model at a few thousand parameters: it loads through
``LFDiffPipeline.from_pretrained`` exactly like trained weights, and a 64² merge takes well
under a second on one CPU thread. ``TINY_LFDIFF`` is also the network size of the training tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.lfdiff import LFDiffConfig

__all__ = ["TINY_LFDIFF", "write_tiny_lfdiff"]

TINY_LFDIFF = LFDiffConfig(
    channels=8,
    blocks=(1, 1),
    heads=2,
    ffn_expansion=2.0,
    gate_reduction=2,
    lpenet_blocks=1,
    condition_channels=4,
    denoiser_channels=(8, 8, 8),
    denoiser_layers=1,
    norm_groups=4,
    sampling_steps=3,
)


def write_tiny_lfdiff(folder: str | Path, seed: int = 0) -> Path:
    """Write a seeded random-init LF-Diff folder (with ``lpenet``) at ``folder``; return it."""
    from ..pipelines.lfdiff import LFDiffPipeline

    torch.manual_seed(seed)
    pipe = LFDiffPipeline.from_config(TINY_LFDIFF)
    pipe.save_pretrained(folder)
    return Path(folder)
