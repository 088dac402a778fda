"""The adversarial part of the VAE loss the LEDiff decoder is fine-tuned with (paper eq. 2).

As in the latent diffusion autoencoders (taming-transformers' ``NLayerDiscriminator`` with a
hinge loss and an adaptive weight): a small PatchGAN judges log-HDR images patch by patch.
GroupNorm replaces BatchNorm, so nothing depends on the per-process batch under data parallel.

- ``PatchDiscriminator``: (N, 3, H, W) log-HDR -> (N, 1, h, w) realness logits.
- ``hinge_d_loss`` / ``generator_loss``: the two sides of the hinge GAN.
- ``adaptive_weight``: λ balancing the GAN gradient against the reconstruction gradient at the
  decoder's last layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PatchDiscriminator", "hinge_d_loss", "generator_loss", "adaptive_weight"]


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``layers`` strided 4x4 convolutions, channels doubling up to 8x ``channels``."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for n in range(1, layers + 1):
            out = channels * min(2**n, 8)
            stride = 2 if n < layers else 1
            blocks += [
                nn.Conv2d(width, out, 4, stride, 1, bias=False),
                nn.GroupNorm(math.gcd(32, out), out),
                nn.LeakyReLU(0.2),
            ]
            width = out
        blocks.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: real patches above +1, fakes below −1."""
    return 0.5 * (torch.relu(1.0 - real_logits).mean() + torch.relu(1.0 + fake_logits).mean())


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge GAN: make fakes look real."""
    return -fake_logits.mean()


def adaptive_weight(rec: torch.Tensor, gan: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """‖∇rec‖ / ‖∇gan‖ at ``last_layer`` (clamped to [0, 1e4], no gradient), as the LDM VAE loss."""
    rec_grad = torch.autograd.grad(rec, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()
