"""LEDiff latent exposure fusion (paper §3.2, "Merging Latent Exposure Brackets").

Each latent of an exposure bracket goes through one shared depthwise convolution that turns it
into a per-pixel, per-channel weight logit; a softmax across the bracket makes the weights sum
to one at every pixel and channel; the merged latent is the weighted sum of the bracket.

The official checkpoint ``vae/merge_model.pth`` is a plain state dict of this module:
``weight_conv.weight`` [4, 1, 1, 1] (a 1x1 depthwise kernel, ``groups=4``) and
``weight_conv.bias`` [4]. The official initialisation (zero kernel, bias 1/3) gives every
exposure the same logit, so an untrained module returns the bracket mean.
"""

from __future__ import annotations

from typing import Mapping

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

__all__ = ["LatentFusion", "FusionStateError"]


class FusionStateError(ValueError):
    """A state dict does not match ``LatentFusion``; the message names the offending key."""


class LatentFusion(ModelMixin, ConfigMixin):
    """Merge a latent exposure bracket with learned per-pixel, per-channel softmax weights.

    A diffusers model (``dtype``, ``device``, ``to``), so a pipeline can register it as a component.

    Parameters
    ----------
    channels
        Latent channels (4 for Stable Diffusion's VAE).
    kernel_size
        Spatial size of the depthwise kernel (1 in the official model).
    """

    @register_to_config
    def __init__(self, channels: int = 4, kernel_size: int = 1):
        super().__init__()
        self.weight_conv = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=True
        )
        with torch.no_grad():
            self.weight_conv.weight.zero_()
            self.weight_conv.bias.fill_(1.0 / 3.0)

    def weights(self, *bracket: torch.Tensor) -> torch.Tensor:
        """Softmax weights, shape (N, C, len(bracket), H, W); they sum to one over dim 2."""
        if len(bracket) < 2:
            raise ValueError(f"a bracket needs at least two latents, got {len(bracket)}")
        logits = torch.stack([self.weight_conv(latent) for latent in bracket], dim=2)
        return torch.softmax(logits, dim=2)

    def forward(self, *bracket: torch.Tensor) -> torch.Tensor:
        """Merge latents given darkest to brightest (the official order: C-, C0, C+)."""
        weights = self.weights(*bracket)
        return (weights * torch.stack(bracket, dim=2)).sum(dim=2)

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load a state dict strictly: same keys, same shapes, or ``FusionStateError`` naming the key."""
        expected = self.state_dict()
        for key in state_dict:
            if key not in expected:
                raise FusionStateError(f"unexpected key {key!r} (expected {sorted(expected)})")
        for key, tensor in expected.items():
            if key not in state_dict:
                raise FusionStateError(f"missing key {key!r}")
            got = tuple(state_dict[key].shape)
            if got != tuple(tensor.shape):
                raise FusionStateError(f"key {key!r} has shape {list(got)}, expected {list(tensor.shape)}")
        self.load_state_dict(dict(state_dict), strict=True)
