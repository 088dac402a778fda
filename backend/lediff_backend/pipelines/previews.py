"""Cheap previews of Stable Diffusion latents, for progress events (no VAE decode).

A fixed linear map from the 4 latent channels to display RGB approximates what the SD 1.x/2.x
VAE would decode; good enough to watch a run, not an output. The factors are the widely used
SD 1.5 latent-to-RGB approximation (as in ComfyUI's ``latent_formats.SD15``), applied to the
scaled latent the denoiser works on; the result maps [-1, 1] to [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["latent_preview"]

_LATENT_TO_RGB = torch.tensor(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]
)


def latent_preview(latents: torch.Tensor, scale: int = 1) -> np.ndarray:
    """(1, 4, h, w) scaled latent -> (h*scale, w*scale, 3) display-encoded float32 in [0, 1]."""
    rgb = latents[0].float().cpu().permute(1, 2, 0) @ _LATENT_TO_RGB
    image = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).numpy()
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1).astype(np.float32)
