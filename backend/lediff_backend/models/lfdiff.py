"""LF-Diff's networks (Hu et al., CVPR 2024, "Generating Content for HDR Deghosting from Frequency View").

No official code or weights have been released (the paper links none; curated HDR-deghosting
lists mark its code "-"; the one public reimplementation ships no checkpoints), so module and
key names are ours, and ``LFDiffConfig()`` (``lfdiff_config``) holds the paper's §5.1 numbers: C = 60 channels,
reconstruction blocks {3, 3, 3} (a PIM and three FRMs each), 6 self-attention heads, FFN
expansion 2.66, average pooling 4 (PIM) and 2 (FRM), LPENet of 4 residual blocks with
PixelUnshuffle 4 and a 3-channel prior, a 3-level U-Net denoiser of {2, 2, 2} blocks,
T = 200 training timesteps and S = 10 DDIM steps. What the paper leaves open is marked
"not in the paper" below.

- ``LPENet`` (stage one, training only), eq. (6): the low-frequency prior representation (LPR)
  of the ground truth, ``z = LPENet(PixelUnshuffle_k(Concat(H, T(H))))``, (N, H/k, W/k).
- ``ConditionEncoder`` (LPENet_DM), eq. (13): ``D = LPENet_DM(AM(PixelUnshuffle_k(X_i)))``, the
  condition of the prior's diffusion model, computed from the LDRs alone.
- the denoiser ``ε_θ(Concat(z_t, D), t)``: a diffusers ``UNet2DModel`` (``build_denoiser``),
  without attention (global attention at its middle would not scale to 4K panoramas; the
  paper's U-Net variant is not specified further); ``reverse_prior`` runs the DDIM reverse
  process of eq. (14) with it.
- ``DHRNet``, eq. (10): the HDR image from the inputs, guided by the prior through the PIMs.

Units (Kalantari et al. 2017, as every method the paper compares with): the inputs are
``X_i = [L_i, L_i^2.2 / t_i]`` (``network_inputs``) with exposure times relative to the darkest
exposure, so linear values are in the darkest exposure's units (its white is 1). DHRNet
predicts the μ-law image ``T(H) = log(1 + μH) / log(1 + μ)``, μ = 5000, through a sigmoid
(as AHDRNet's and CA-ViT's outputs); ``inverse_mu_law`` decodes it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel
from torch import nn

from .lfdiff_config import LFDiffConfig

__all__ = [
    "GAMMA",
    "LFDiffConfig",
    "mu_law",
    "inverse_mu_law",
    "network_inputs",
    "LPENet",
    "ConditionEncoder",
    "DHRNet",
    "build_denoiser",
    "build_scheduler",
    "build_networks",
    "reverse_prior",
]

GAMMA = 2.2  # the inputs' linearisation (the paper's "gamma correction", after Kalantari et al.)
EXPOSURES = 3  # the design merges three exposures; the middle one is the reference


def mu_law(hdr: torch.Tensor, mu: float) -> torch.Tensor:
    """T(H) = log(1 + μH) / log(1 + μ): [0, 1] -> [0, 1], the domain of the loss and the output."""
    return torch.log1p(mu * hdr) / math.log1p(mu)


def inverse_mu_law(tonemapped: torch.Tensor, mu: float) -> torch.Tensor:
    return torch.expm1(tonemapped * math.log1p(mu)) / mu


def network_inputs(ldrs: torch.Tensor, evs: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3, H, W) display-encoded LDRs, darkest first, and their (B, 3) EVs -> X (B, 3, 6, H, W).

    ``X_i = [L_i, L_i^γ / t_i]`` with ``t_i = 2^(ev_i - ev_0)``: linear values in the darkest
    exposure's units.
    """
    times = torch.exp2(evs - evs[:, :1]).to(ldrs.dtype)
    ldrs = ldrs.clamp(0.0, 1.0)
    return torch.cat([ldrs, ldrs**GAMMA / times[..., None, None, None]], dim=2)


def _conv3(in_channels: int, out_channels: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, groups=groups)


def _conv1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv3(channels, channels)
        self.conv2 = _conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ResidualStack(nn.Module):
    """LPENet's body: a convolution, residual blocks, a convolution to ``out_channels``."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, blocks: int):
        super().__init__()
        self.conv_in = _conv3(in_channels, channels)
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.conv_out = _conv3(channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.blocks(F.leaky_relu(self.conv_in(x), 0.2)))


class AlignmentModule(nn.Module):
    """AHDRNet's attention alignment (Yan et al., CVPR 2019), the paper's AM [41].

    Each exposure is encoded by one shared convolution; the two non-reference features are
    gated by attention maps computed from themselves and the reference (the middle exposure),
    which suppresses misaligned and saturated content; the three are merged by a convolution.
    """

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.encode = _conv3(in_channels, channels)
        self.attention = nn.ModuleList(
            nn.Sequential(_conv3(2 * channels, 2 * channels), nn.ReLU(), _conv3(2 * channels, channels), nn.Sigmoid())
            for _ in range(EXPOSURES - 1)
        )
        self.merge = _conv3(EXPOSURES * channels, channels)

    def forward(self, exposures: torch.Tensor) -> torch.Tensor:
        """(B, 3, C_in, H, W), the reference in the middle -> (B, C, H, W)."""
        dark, reference, bright = (F.relu(self.encode(exposures[:, i])) for i in range(EXPOSURES))
        gated = [f * attend(torch.cat([f, reference], 1)) for f, attend in zip((dark, bright), self.attention)]
        return self.merge(torch.cat([gated[0], reference, gated[1]], 1))


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of every pixel (Restormer's)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias)
        return normed.permute(0, 3, 1, 2)


def transposed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Attention across channels (Restormer's MDTA): (B, h, Cq, P), (B, h, Ck, P) x2 -> (B, h, Cq, P).

    Queries and keys are L2-normalised over the P pixels; the (Cq, Ck) map is a softmax over the
    key channels. The cost is linear in the pixels, so it runs on images of any size.
    """
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    return ((q @ k.transpose(-2, -1)) * temperature).softmax(dim=-1) @ v


def _projection(in_channels: int, out_channels: int) -> nn.Sequential:
    """Point-wise then depth-wise 3x3 convolution, the Q/K/V projection of eq. (9)."""
    return nn.Sequential(_conv1(in_channels, out_channels), _conv3(out_channels, out_channels, groups=out_channels))


class SelfAttention(nn.Module):
    """Multi-head transposed self-attention of the FRM's low-frequency branch (the paper's SA [45])."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = _projection(channels, 3 * channels)
        self.out = _conv1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in self.qkv(x).chunk(3, dim=1))
        return self.out(transposed_attention(q, k, v, self.temperature).reshape(b, c, h, w))


class PriorCrossAttention(nn.Module):
    """PIM's cross-attention, eq. (9): ``W_c V̂ · Softmax(K̂ · Q̂ / γ)``, one head.

    Queries come from the features (C channels), keys and values from the prior (N channels,
    on the same grid): every output channel is a learned mix of the prior's value channels.
    """

    def __init__(self, channels: int, prior_channels: int):
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(1, 1, 1))
        self.q = _projection(channels, channels)
        self.kv = _projection(prior_channels, 2 * prior_channels)
        self.out = _conv1(channels, channels)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.q(x).reshape(b, 1, c, h * w)
        k, v = (t.reshape(b, 1, -1, h * w) for t in self.kv(prior).chunk(2, dim=1))
        return self.out(transposed_attention(q, k, v, self.temperature).reshape(b, c, h, w))


class FeedForward(nn.Module):
    """Restormer's gated depth-wise feed-forward network (expansion 2.66 in the paper)."""

    def __init__(self, channels: int, expansion: float):
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = _conv1(channels, 2 * hidden)
        self.dwconv = _conv3(2 * hidden, 2 * hidden, groups=2 * hidden)
        self.project_out = _conv1(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """``x + attention(norm(x), *context)``, then ``x + FFN(norm(x))``."""

    def __init__(self, channels: int, attention: nn.Module, expansion: float):
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attention = attention
        self.norm2 = LayerNorm2d(channels)
        self.ffn = FeedForward(channels, expansion)

    def forward(self, x: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), *context)
        return x + self.ffn(self.norm2(x))


class ChannelGate(nn.Module):
    """Channel attention after the branches are fused: squeeze, excite, scale (not detailed in the paper)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        squeezed = max(channels // reduction, 1)
        self.squeeze = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), _conv1(channels, squeezed), nn.ReLU(), _conv1(squeezed, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.squeeze(x)


class FrequencyBlock(nn.Module):
    """FRM (Fig. 3a) and, with the prior's cross-attention in its low branch, PIM.

    ``F = RB(x)``; ``low = AvgPool_k(F)``, ``high = F − Up(low)`` (eq. 7); the low branch goes
    through a transformer block at 1/k resolution, the high one through a residual block;
    ``Concat[RB(high), Up(low)]`` (eq. 8), a 1x1 convolution and channel attention, plus ``x``.
    Up is nearest-neighbour, so ``high`` averages to zero over each pooling cell.
    """

    def __init__(self, channels: int, pool: int, gate_reduction: int, low: TransformerBlock):
        super().__init__()
        self.pool = pool
        self.rb_in = ResidualBlock(channels)
        self.low = low
        self.rb_high = ResidualBlock(channels)
        self.fuse = _conv1(2 * channels, channels)
        self.gate = ChannelGate(channels, gate_reduction)

    def forward(self, x: torch.Tensor, *prior: torch.Tensor) -> torch.Tensor:
        f = self.rb_in(x)
        low = F.avg_pool2d(f, self.pool)
        high = f - F.interpolate(low, scale_factor=self.pool, mode="nearest")
        low = F.interpolate(self.low(low, *prior), scale_factor=self.pool, mode="nearest")
        return x + self.gate(self.fuse(torch.cat([self.rb_high(high), low], dim=1)))


def _feature_refinement(config: LFDiffConfig) -> FrequencyBlock:
    c = config.channels
    attention = TransformerBlock(c, SelfAttention(c, config.heads), config.ffn_expansion)
    return FrequencyBlock(c, config.frm_pool, config.gate_reduction, attention)


def _prior_integration(config: LFDiffConfig) -> FrequencyBlock:
    c = config.channels
    attention = TransformerBlock(c, PriorCrossAttention(c, config.prior_channels), config.ffn_expansion)
    return FrequencyBlock(c, config.unshuffle, config.gate_reduction, attention)


class ReconstructionBlock(nn.Module):
    """One PIM (the prior joins here) followed by N FRMs."""

    def __init__(self, config: LFDiffConfig, refinements: int):
        super().__init__()
        self.pim = _prior_integration(config)
        self.frms = nn.ModuleList(_feature_refinement(config) for _ in range(refinements))

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        x = self.pim(x, prior)
        for frm in self.frms:
            x = frm(x)
        return x


class DHRNet(nn.Module):
    """The dynamic HDR reconstruction network, eq. (10), with the aligned features as a global skip.

    ``forward(inputs, prior)``: X (B, 3, 6, H, W) and z (B, N, H/k, W/k) -> the μ-law HDR
    (B, 3, H, W) in (0, 1), in the darkest exposure's units.
    """

    def __init__(self, config: LFDiffConfig):
        super().__init__()
        self.align = AlignmentModule(6, config.channels)
        self.blocks = nn.ModuleList(ReconstructionBlock(config, n) for n in config.blocks)
        self.conv_out = _conv3(config.channels, 3)

    def forward(self, inputs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        aligned = self.align(inputs)
        features = aligned
        for block in self.blocks:
            features = block(features, prior)
        return torch.sigmoid(self.conv_out(features + aligned))


class LPENet(nn.Module):
    """Stage one's prior extractor, eq. (6): linear HDR (B, 3, H, W) in [0, 1] -> z (B, N, H/k, W/k).

    The prior is bounded to (-1, 1) by a tanh (not in the paper): it is the diffusion model's
    data, and DDPM's noise schedule assumes unit-scale data; unbounded, stage one's training
    lets it grow until z_T is no longer noise.
    """

    def __init__(self, config: LFDiffConfig):
        super().__init__()
        self.unshuffle = config.unshuffle
        self.mu = config.mu
        inputs = 6 * config.unshuffle**2
        self.body = ResidualStack(inputs, config.channels, config.prior_channels, config.lpenet_blocks)

    def forward(self, hdr: torch.Tensor) -> torch.Tensor:
        prior = self.body(F.pixel_unshuffle(torch.cat([hdr, mu_law(hdr, self.mu)], dim=1), self.unshuffle))
        return torch.tanh(prior)


class ConditionEncoder(nn.Module):
    """LPENet_DM, eq. (13): X (B, 3, 6, H, W) -> D (B, condition_channels, H/k, W/k).

    LPENet's architecture with a wider first convolution, after the alignment module applied to
    the pixel-unshuffled exposures.
    """

    def __init__(self, config: LFDiffConfig):
        super().__init__()
        self.unshuffle = config.unshuffle
        self.align = AlignmentModule(6 * config.unshuffle**2, config.channels)
        self.body = ResidualStack(config.channels, config.channels, config.condition_channels, config.lpenet_blocks)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.body(self.align(F.pixel_unshuffle(inputs, self.unshuffle)))


def build_denoiser(config: LFDiffConfig) -> UNet2DModel:
    """ε_θ(Concat(z_t, D), t): a U-Net of len(denoiser_channels) levels without attention."""
    levels = len(config.denoiser_channels)
    return UNet2DModel(
        in_channels=config.prior_channels + config.condition_channels,
        out_channels=config.prior_channels,
        block_out_channels=config.denoiser_channels,
        layers_per_block=config.denoiser_layers,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        add_attention=False,
        norm_num_groups=config.norm_groups,
    )


def build_scheduler(config: LFDiffConfig) -> DDIMScheduler:
    """DDIM over T steps; "trailing" spacing starts the reverse process at t = T - 1, as eq. (14)
    starts at z_T, and the last step lands on the clean prior (``set_alpha_to_one``); predicted
    priors are clipped to LPENet's range (-1, 1)."""
    return DDIMScheduler(
        num_train_timesteps=config.train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule="linear",
        clip_sample=True,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
        prediction_type="epsilon",
    )


def build_networks(config: LFDiffConfig) -> dict[str, nn.Module]:
    """Fresh ``condition``, ``denoiser``, ``dhrnet`` and ``lpenet`` (the names of their weight files)."""
    return dict(
        condition=ConditionEncoder(config),
        denoiser=build_denoiser(config),
        dhrnet=DHRNet(config),
        lpenet=LPENet(config),
    )


def reverse_prior(
    denoiser: UNet2DModel,
    scheduler: DDIMScheduler,
    condition: torch.Tensor,
    latents: torch.Tensor,
    steps: int,
    on_step: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
) -> torch.Tensor | None:
    """The DDIM reverse process from ``latents`` (z_T) to the prior, conditioned on ``condition`` (D).

    ``on_step(i, t, latents)`` after every step returns the latents to go on with, or None to
    stop (then the result is None). Differentiable when called with gradients (stage two).
    """
    scheduler.set_timesteps(steps, device=latents.device)
    for i, t in enumerate(scheduler.timesteps):
        noise = denoiser(torch.cat([latents, condition], dim=1), t).sample
        latents = scheduler.step(noise, t, latents).prev_sample
        if on_step is not None:
            latents = on_step(i, t, latents)
            if latents is None:
                return None
    return latents
