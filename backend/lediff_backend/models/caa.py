"""Correspondence-aware attention (CAA, MVDiffusion, NeurIPS 2023) on a diffusers UNet.

MVDiffusion denoises the views of a panorama together with a frozen Stable Diffusion 2 UNet and
one CAA block at each of these places (the official ``MultiViewBaseModel``):

- after every down block's resnets/attentions, before its downsampler (``cp_blocks_encoder``);
- in the mid block, after its first resnet (``cp_blocks_mid``);
- after every up block's resnets/attentions, before its upsampler (``cp_blocks_decoder``).

A block lets every feature cell of view ``i`` attend to its two ring neighbours ``i - 1`` and
``i + 1``: for each, the 3x3 feature cells around the corresponding point (bilinearly sampled,
see ``models.correspondence``), each plus a sinusoidal encoding of its offset seen from the
query cell; samples outside the neighbour's image are zeroed (they still take part in the
softmax, as in the official code). The block is a pre-norm transformer layer with one shared
LayerNorm for query and keys, then a GEGLU feed-forward; both output projections start at zero,
so a fresh block is the identity and the multi-view UNet equals plain SD on each view.

Module and parameter names follow the official checkpoint (``cp_blocks_*.<i>.transformer.attn1
.to_q`` ...), so ``pano.ckpt`` maps onto ``MultiViewCAA`` by dropping the ``mv_base_model.``
prefix (its ``pe.freq_bands`` constants are checked, not stored). The blocks are attached with
forward hooks: the UNet stays a stock ``UNet2DConditionModel`` and runs unchanged outside
``MultiViewCAA.views(...)``.

Classes
-------
- ``PositionalEncoding``: (x, y) offsets -> [sin x, sin y, cos x, cos y] at ``N`` frequencies.
- ``CorrespondenceAttentionBlock``: one CAA block.
- ``ViewGeometry``: cameras of the views and their feature samples per resolution (cached).
- ``MultiViewCAA``: all blocks of a UNet (a diffusers ``ModelMixin``), ``attach`` and ``views``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from . import correspondence as geo

__all__ = ["PositionalEncoding", "CorrespondenceAttentionBlock", "ViewGeometry", "MultiViewCAA"]

HEAD_DIM = 32  # official: dim // 32 heads of 32 channels
KERNEL_RADIUS = 1  # official: 3x3 neighbourhood
NEIGHBOURS = (-1, 1)  # ring offsets of the key views, in this order


class PositionalEncoding(nn.Module):
    """NeRF-style encoding of 2-D offsets: ``(..., 2)`` -> ``(..., 4 N)``, always in float32.

    Frequencies are ``2^k`` for ``N <= 80``, else ``(5000^(2.5/N))^k`` (k = 0 .. N-1), as the
    official ``PosEmbedding``. Large ``2^k`` make the highest channels of wide blocks
    pseudo-random, exactly as in the trained model. The official checkpoint stores them as
    ``pe.freq_bands``; here they are computed (no buffer), so casting the blocks to fp16 cannot
    turn ``2^79`` into infinity; the converter checks the stored values against ``frequencies``.
    """

    def __init__(self, num_freqs: int):
        super().__init__()
        self.num_freqs = num_freqs

    @staticmethod
    def frequencies(num_freqs: int) -> torch.Tensor:
        """float32 (N,) frequencies, bit-identical to the official ``freq_bands``."""
        base = 2.0 if num_freqs <= 80 else 5000 ** (1 / (num_freqs / 2.5))
        return base ** torch.linspace(0, num_freqs - 1, num_freqs)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        angles = xy.float()[..., None] * self.frequencies(self.num_freqs).to(xy.device)  # (..., 2, N)
        return torch.cat([angles.sin(), angles.cos()], dim=-2).flatten(-2)


class _Attention(nn.Module):
    """Multi-head attention of one query token over key tokens; zero-initialised output."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        def split(t: torch.Tensor) -> torch.Tensor:  # (n, l, c) -> (n, heads, l, c / heads)
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        q, k, v = split(self.to_q(query)), split(self.to_k(context)), split(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(-2))


class _GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class _Transformer(nn.Module):
    """Pre-norm attention (query and keys share ``norm1``) and a GEGLU feed-forward, both residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = _Attention(dim, heads=max(1, dim // HEAD_DIM))
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Module()
        self.ff.net = nn.Sequential(_GEGLU(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim))
        nn.init.zeros_(self.ff.net[2].weight)
        nn.init.zeros_(self.ff.net[2].bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, query_pe: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x + query_pe), self.norm1(context)) + x
        return self.ff.net(self.norm2(x)) + x


class CorrespondenceAttentionBlock(nn.Module):
    """One CAA block over ``dim``-channel features of all views (``dim`` divisible by 4)."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 4:
            raise ValueError(f"CAA needs a channel count divisible by 4, got {dim}")
        self.transformer = _Transformer(dim)
        self.pe = PositionalEncoding(dim // 4)

    def forward(self, x: torch.Tensor, geometry: ViewGeometry) -> torch.Tensor:
        """``x``: (batch · views, C, h, w), views varying fastest; returns the same shape."""
        views = geometry.num_views
        batch, (channels, rows, cols) = x.shape[0] // views, x.shape[1:]
        keys, grid, offsets, valid = geometry.samples(rows, cols, x.device)
        per_view = x.unflatten(0, (batch, views))
        query_pe = self.pe(torch.zeros(1, 2, device=x.device)).to(x.dtype)
        outs = []
        for i in range(views):  # one view at a time keeps the gathered keys small
            neighbours = per_view[:, keys[i]].flatten(0, 1)  # (batch · 2, C, h, w)
            sampled = F.grid_sample(
                neighbours,
                grid[i].repeat(batch, 1, 1, 1).to(x.dtype),
                mode="bilinear",
                padding_mode="zeros",
                align_corners=True,
            )  # (batch · 2, C, h, w · k)
            sampled = sampled.unflatten(0, (batch, len(NEIGHBOURS))).unflatten(-1, (cols, -1))
            context = sampled.permute(0, 3, 4, 1, 5, 2).reshape(batch * rows * cols, -1, channels)  # slot-major keys
            pe = self.pe(offsets[i]).to(x.dtype).repeat(batch, 1, 1)
            context = (context + pe) * valid[i].repeat(batch, 1, 1).to(x.dtype)
            query = per_view[:, i].permute(0, 2, 3, 1).reshape(-1, 1, channels)
            out = self.transformer(query, context, query_pe)
            outs.append(out.reshape(batch, rows, cols, channels).permute(0, 3, 1, 2))
        return torch.stack(outs, dim=1).flatten(0, 1)


class ViewGeometry:
    """Cameras of ``num_views`` views sharing a centre, and their CAA feature samples.

    ``yaws_deg``/``pitches_deg`` as in ``hdr.projection``; every view ``image_size`` pixels square
    with horizontal ``fov_deg``; view ``i`` attends to views ``i - 1`` and ``i + 1`` (mod n).
    ``samples(h, w, device)`` is computed once per feature size and device.
    """

    def __init__(
        self,
        yaws_deg: Sequence[float],
        image_size: int,
        fov_deg: float = geo.RING_FOV_DEG,
        pitches_deg: Sequence[float] | None = None,
    ):
        self.yaws_deg = [float(y) for y in yaws_deg]
        self.pitches_deg = [0.0] * len(self.yaws_deg) if pitches_deg is None else [float(p) for p in pitches_deg]
        self.image_size = int(image_size)
        self.fov_deg = float(fov_deg)
        self._cache: dict[tuple, tuple[torch.Tensor, ...]] = {}

    @classmethod
    def ring(
        cls,
        image_size: int,
        num_views: int = geo.RING_VIEWS,
        yaw_step_deg: float = geo.RING_YAW_STEP_DEG,
        fov_deg: float = geo.RING_FOV_DEG,
    ) -> ViewGeometry:
        """MVDiffusion's ring: view ``i`` at yaw ``-i * step`` (each to the right of the last)."""
        return cls(geo.ring_yaws(num_views, yaw_step_deg), image_size, fov_deg)

    @property
    def num_views(self) -> int:
        return len(self.yaws_deg)

    def samples(self, rows: int, cols: int, device) -> tuple[torch.Tensor, ...]:
        """(keys (n, 2) long, grid (n, 2, h, w·k, 2) in [-1, 1], offsets (n, h·w, 2k, 2), valid (n, h·w, 2k, 1))."""
        key = (rows, cols, str(device))
        if key not in self._cache:
            self._cache[key] = tuple(torch.from_numpy(a).to(device) for a in self._compute(rows, cols))
        return self._cache[key]

    def _compute(self, rows: int, cols: int) -> tuple[np.ndarray, ...]:
        n, size = self.num_views, self.image_size
        k_matrix = geo.intrinsics(size, size, self.fov_deg)
        rotations = [geo.rotation(y, p) for y, p in zip(self.yaws_deg, self.pitches_deg)]
        keys = np.array([[(i + d) % n for d in NEIGHBOURS] for i in range(n)], np.int64)
        scale = np.array([max(cols - 1, 1), max(rows - 1, 1)], np.float32)
        grids, offsets, valids = [], [], []
        for i in range(n):
            homographies = [geo.homography(k_matrix, rotations[i], k_matrix, rotations[j]) for j in keys[i]]
            found = [geo.neighbour_samples(h, (size, size), (rows, cols), KERNEL_RADIUS) for h in homographies]
            grids.append(np.stack([(s.grid * 2 / scale - 1).reshape(rows, -1, 2) for s in found]))
            offsets.append(np.concatenate([s.offsets.reshape(rows * cols, -1, 2) for s in found], axis=1))
            valids.append(np.concatenate([s.valid.reshape(rows * cols, -1, 1) for s in found], axis=1))
        return keys, np.stack(grids), np.stack(offsets), np.stack(valids).astype(np.float32)


class MultiViewCAA(ModelMixin, ConfigMixin):
    """The CAA blocks of one UNet: ``cp_blocks_encoder`` (one per down block), ``cp_blocks_mid``,
    ``cp_blocks_decoder`` (one per up block); channels are each block's output channels."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, encoder_channels: Sequence[int], mid_channels: int, decoder_channels: Sequence[int]):
        super().__init__()
        self.cp_blocks_encoder = nn.ModuleList(CorrespondenceAttentionBlock(c) for c in encoder_channels)
        self.cp_blocks_mid = CorrespondenceAttentionBlock(mid_channels)
        self.cp_blocks_decoder = nn.ModuleList(CorrespondenceAttentionBlock(c) for c in decoder_channels)
        self._geometry: ViewGeometry | None = None

    @classmethod
    def for_unet(cls, unet: UNet2DConditionModel) -> MultiViewCAA:
        """Fresh (identity) blocks sized for ``unet``."""
        return cls(
            encoder_channels=[b.resnets[-1].out_channels for b in unet.down_blocks],
            mid_channels=unet.mid_block.resnets[-1].out_channels,
            decoder_channels=[b.resnets[-1].out_channels for b in unet.up_blocks],
        )

    def attach(self, unet: UNet2DConditionModel) -> None:
        """Hook the blocks into ``unet`` at MVDiffusion's places (replacing any earlier attachment)."""
        for handle in getattr(unet, "_caa_hooks", []):
            handle.remove()
        if len(unet.down_blocks) != len(self.cp_blocks_encoder) or len(unet.up_blocks) != len(self.cp_blocks_decoder):
            raise ValueError("these CAA blocks were made for a UNet with a different number of blocks")
        hooks = [self._after(block, caa) for block, caa in zip(unet.down_blocks, self.cp_blocks_encoder)]
        hooks.append(unet.mid_block.resnets[0].register_forward_hook(self._output_hook(self.cp_blocks_mid)))
        hooks += [self._after(block, caa) for block, caa in zip(unet.up_blocks, self.cp_blocks_decoder)]
        unet._caa_hooks = hooks

    def _after(self, block: nn.Module, caa: CorrespondenceAttentionBlock):
        """CAA on a block's result before its resampler, or on its output when it has none."""
        resamplers = getattr(block, "downsamplers", None) or getattr(block, "upsamplers", None)
        if resamplers:
            return resamplers[0].register_forward_pre_hook(
                lambda module, args: (self._run_block(caa, args[0]), *args[1:])
            )
        return block.register_forward_hook(self._output_hook(caa))

    def _output_hook(self, caa: CorrespondenceAttentionBlock):
        def hook(module, args, output):
            if isinstance(output, tuple):  # down blocks return (hidden_states, residuals)
                return (self._run_block(caa, output[0]), *output[1:])
            return self._run_block(caa, output)

        return hook

    def _run_block(self, caa: CorrespondenceAttentionBlock, x: torch.Tensor) -> torch.Tensor:
        if self._geometry is None or self._geometry.num_views < 2:
            return x
        return caa(x, self._geometry)

    @contextmanager
    def views(self, geometry: ViewGeometry) -> Iterator[None]:
        """Within this context the attached UNet's batch is (batch · views) with views varying fastest."""
        self._geometry = geometry
        try:
            yield
        finally:
            self._geometry = None

