"""GMODiff's networks (Hu et al., "GMODiff: One-Step Gain Map Refinement with Diffusion Priors",
ECCV 2026; official code github.com/gbymat/GMODiff), written from the official code's structure.

GMODiff estimates a *gain map* rather than HDR: with the reference LDR ``L`` (display values)
and the HDR ``H``, ``G = log1p(100·H / (L + 1/64)) / log1p(100)``, so ``H = (L + 1/64)·(101^G − 1)/100``
(``gain_map`` / ``hdr_from_gain_map``; the official ``src/dareg/utils/gainmap.py``). Its parts:

- ``DaReg``: the regression network (official ``src/dareg/models/nafnet.py``, class ``NAFNet``):
  three 6-channel inputs ``[L^2.2 / t, L]`` (darkest, reference, brightest), one 3x3 intro
  convolution each, an attention fusion of the three (``ExposureFusion``), a NAFNet U-Net
  (down-scales 2, 2, 2, 4: 32 in all), the gain map through a sigmoid, and a mask head
  (stage 2: where the regression is likely wrong). Its bottleneck, flattened to tokens, is the
  "visual embedding". Parameter names are the official ones, so ``dareg_mask.pth`` loads strictly.
- ``MaskVisualFusion`` (official ``MaskVisualFusionModule``, saved as ``proj``): mask tokens
  (pixel-unshuffle 8, two stride-2 convolutions: one token per 32x32 pixels, like the
  embedding) joined with the visual embedding by an MLP; the result replaces the text
  embedding as the UNet's ``encoder_hidden_states`` and weights the decoder's skips.
- ``GuidedSkip`` (official ``DRB``): a 1x1 convolution of a VAE-encoder activation, gated per
  channel by the prior tokens; one per decoder block (``vae.decoder.skip_conv_1..4``), added to
  the block's input (official ``my_vae_decoder_fwd``). ``encode_with_skips`` keeps the input of
  every encoder block (official ``my_vae_encoder_fwd``), ``decode_with_skips`` adds them back.
- ``unet_lora_targets`` / ``vae_lora_targets``: the layers GMODiff adapts with LoRA (the
  official ``initialize_unet`` / ``initialize_vae`` selection rules), for training and for
  writing checkpoints in the official layout.

Verified against the official code: parameter names and shapes of all of these (DaReg's 532
keys, ``proj``, the four skips, the LoRA target lists, by building the official classes), the
8-channel UNet input (regression latent, then the condition latent), ``t = 499``, the gain-map
formula and its 1/64 offset, the 6-channel DaReg input with gamma 2.2, and the official
inference running ``MaskVisualFusion`` in training mode (its BatchNorms normalise with the
statistics of the image at hand; ``BatchStatNorm2d`` does exactly that, always). End to end, on
tiny random weights in the official layout, ``pipelines.gmodiff`` gives the gain map of the
official forward (its encoder/decoder forwards, ``DRB``, ``MaskVisualFusionModule``, PEFT 0.9
adapters, diffusers 0.25's DDPM step) within 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GAIN_MU",
    "GAIN_OFFSET",
    "TIMESTEP",
    "DAREG_GAMMA",
    "dareg_inputs",
    "gain_map",
    "hdr_from_gain_map",
    "DaRegConfig",
    "DaRegOutput",
    "DaReg",
    "BatchStatNorm2d",
    "MaskVisualFusion",
    "GuidedSkip",
    "attach_guided_skips",
    "encode_with_skips",
    "decode_with_skips",
    "widen_conv_in",
    "unet_lora_targets",
    "vae_lora_targets",
    "adapt_base_model",
]

GAIN_MU = 100.0  # the gain map's log compression (official MU)
GAIN_OFFSET = 1.0 / 64  # added to the reference LDR so that black pixels keep a gain (official EPSILON)
TIMESTEP = 499  # the one denoising step's timestep (official ``self.timesteps``)
DAREG_GAMMA = 2.2  # DaReg's linearisation of its inputs, ``L^2.2 / t`` (official ``ldr_to_hdr``)


def dareg_inputs(bracket: torch.Tensor, evs: torch.Tensor) -> list[torch.Tensor]:
    """DaReg's inputs ``[L^2.2 / t, L]`` (N, 6, H, W) of a bracket (N, 3, 3, H, W), darkest first,
    shot at ``evs`` (N, 3); exposure times ``t = 2^(ev − ev_darkest)``, so the darkest one's is 1."""
    times = torch.exp2(evs - evs[:, :1]).to(bracket)[..., None, None, None]
    return list(torch.cat([bracket**DAREG_GAMMA / times, bracket], dim=2).unbind(1))


def gain_map(hdr: torch.Tensor, ldr: torch.Tensor) -> torch.Tensor:
    """``log1p(100·hdr / (ldr + 1/64)) / log1p(100)``: the gain map of ``hdr`` over the reference ``ldr``."""
    return torch.log1p(GAIN_MU * hdr / (ldr + GAIN_OFFSET)) / math.log1p(GAIN_MU)


def hdr_from_gain_map(gain: torch.Tensor, ldr: torch.Tensor) -> torch.Tensor:
    """The inverse of ``gain_map``: ``(ldr + 1/64) · ((1 + 100)^gain − 1) / 100``."""
    return (ldr + GAIN_OFFSET) * torch.expm1(gain * math.log1p(GAIN_MU)) / GAIN_MU


class _Component(nn.Module):
    """The ``device`` and ``dtype`` that a diffusers pipeline asks of its components."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


# -- DaReg: the regression network ---------------------------------------------------------------


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of every pixel (NAFNet's)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - mean) / torch.sqrt(var + self.eps) + self.bias[:, None, None]


def _gate(x: torch.Tensor) -> torch.Tensor:
    """NAFNet's SimpleGate: the first half of the channels times the second."""
    first, second = x.chunk(2, dim=1)
    return first * second


class NAFBlock(nn.Module):
    """NAFNet block (Chen et al. 2022), expansions 2: gated depthwise mixing, then a gated FFN."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.conv3 = nn.Conv2d(c, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = _gate(self.conv2(self.conv1(self.norm1(inp))))
        y = inp + self.conv3(x * self.sca(x)) * self.beta
        return y + self.conv5(_gate(self.conv4(self.norm2(y)))) * self.gamma


class ExposureFusion(nn.Module):
    """The official ``MultiExposureFusion``: the non-reference features, each gated by an
    attention map computed with the reference's, concatenated with it and mixed."""

    def __init__(self, c: int):
        super().__init__()
        self.att11 = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.att12 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.att31 = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.att32 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(3 * c, c, 3, padding=1)

    def forward(self, dark: torch.Tensor, ref: torch.Tensor, bright: torch.Tensor) -> torch.Tensor:
        act = F.leaky_relu  # nn.LeakyReLU() in the official module: slope 0.01
        dark_att = torch.sigmoid(self.att12(act(self.att11(torch.cat([dark, ref], 1)))))
        bright_att = torch.sigmoid(self.att32(act(self.att31(torch.cat([bright, ref], 1)))))
        return self.conv2(torch.cat([dark * dark_att, ref, bright * bright_att], 1))


@dataclass(frozen=True)
class DaRegConfig:
    """DaReg's size; the defaults are the official ``NAFNet()`` that ``dareg_mask.pth`` holds."""

    channels: tuple[int, ...] = (64, 128, 256, 512, 1024)  # per level, the last is the bottleneck
    encoder_blocks: tuple[int, ...] = (2, 4, 4, 8)
    decoder_blocks: tuple[int, ...] = (2, 2, 2, 2)
    middle_blocks: int = 1
    down_scales: tuple[int, ...] = (2, 2, 2, 4)
    mask_channels: int = 16  # the mask head's width (official seg_head_channels)
    mask_head: bool = True
    in_channels: int = 6

    @property
    def scale(self) -> int:
        """The bottleneck's down-scaling: inputs are padded to multiples of it."""
        return math.prod(self.down_scales)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> DaRegConfig:
        """The size a DaReg state dict was saved at (official key names, ``module.`` stripped).

        Anything the keys do not tell keeps its official default, so a damaged state dict
        still builds a network, and loading it strictly names what is wrong.
        """
        default = cls()
        levels = _children(state, "downs.") or len(default.down_scales)
        if "intro_0.weight" not in state or any(f"downs.{i}.0.weight" not in state for i in range(levels)):
            return default
        downs = [state[f"downs.{i}.0.weight"] for i in range(levels)]
        adapt = state.get("encoder_adapt_convs.0.weight")
        return cls(
            channels=(state["intro_0.weight"].shape[0], *(w.shape[0] for w in downs)),
            encoder_blocks=tuple(_children(state, f"encoders.{i}.") for i in range(levels)),
            decoder_blocks=tuple(_children(state, f"decoders.{i}.") for i in range(levels)),
            middle_blocks=_children(state, "middle_blks."),
            down_scales=tuple(w.shape[-1] for w in downs),
            mask_channels=adapt.shape[0] if adapt is not None else default.mask_channels,
            mask_head=adapt is not None,
            in_channels=state["intro_0.weight"].shape[1],
        )


def _children(state: dict, prefix: str) -> int:
    """How many numbered children the keys under ``prefix`` have (``prefix0.``, ``prefix1.``, ...)."""
    return len({k[len(prefix):].split(".", 1)[0] for k in state if k.startswith(prefix)})


@dataclass
class DaRegOutput:
    """``embedding`` (N, tokens, C) bottleneck tokens, one per ``scale`` x ``scale`` pixels;
    ``gain_map`` (N, 3, H, W) in [0, 1]; ``mask`` (N, 1, H, W) in [0, 1] (None without the head)."""

    embedding: torch.Tensor
    gain_map: torch.Tensor
    mask: torch.Tensor | None = field(default=None)


class DaReg(_Component):
    """Three exposures -> gain map over the reference, bottleneck tokens and an error mask."""

    def __init__(self, config: DaRegConfig = DaRegConfig()):
        super().__init__()
        self.config = config
        c = config.channels
        self.intro_0, self.intro_1, self.intro_2 = (nn.Conv2d(config.in_channels, c[0], 3, padding=1) for _ in range(3))
        self.ending = nn.Conv2d(c[0], c[0], 3, padding=1)
        self.fusion = ExposureFusion(c[0])
        self.encoders = nn.ModuleList(nn.Sequential(*(NAFBlock(c[i]) for _ in range(n)))
                                      for i, n in enumerate(config.encoder_blocks))
        self.downs = nn.ModuleList(nn.Sequential(nn.Conv2d(c[i], c[i + 1], s, stride=s))
                                   for i, s in enumerate(config.down_scales))
        self.middle_blks = nn.Sequential(*(NAFBlock(c[-1]) for _ in range(config.middle_blocks)))
        levels = len(config.down_scales)
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c[levels - i], c[levels - i - 1] * s * s, 1, bias=False), nn.PixelShuffle(s))
            for i, s in enumerate(reversed(config.down_scales))
        )
        self.decoders = nn.ModuleList(nn.Sequential(*(NAFBlock(c[levels - i - 1]) for _ in range(n)))
                                      for i, n in enumerate(config.decoder_blocks))
        self.outconv = nn.Conv2d(c[0], 3, 3, padding=1)
        if config.mask_head:
            m = config.mask_channels
            self.encoder_adapt_convs = nn.ModuleList(nn.Conv2d(ch, m, 1) for ch in c[:-1])
            self.seg_conv_layers = nn.Sequential(
                nn.Conv2d(m * levels, 2 * m, 3, padding=1), nn.ReLU(),
                nn.Conv2d(2 * m, m, 3, padding=1), nn.ReLU(),
                nn.Conv2d(m, 1, 1),
            )

    def mask_head_parameters(self) -> list[nn.Parameter]:
        """What stage 2 trains (the official ``freeze_pretrained_layers`` leaves these free)."""
        return [*self.encoder_adapt_convs.parameters(), *self.seg_conv_layers.parameters()]

    def forward(self, dark: torch.Tensor, ref: torch.Tensor, bright: torch.Tensor,
                with_mask: bool = True) -> DaRegOutput:
        """Each input (N, 6, H, W) is ``[L^2.2 / t, L]``; sizes are padded with zeros to
        multiples of ``config.scale`` inside and the outputs cropped back."""
        height, width = ref.shape[-2:]
        pad = (0, -width % self.config.scale, 0, -height % self.config.scale)
        dark, ref, bright = (F.pad(x, pad) for x in (dark, ref, bright))
        f_ref = self.intro_1(ref)
        x = self.fusion(self.intro_0(dark), f_ref, self.intro_2(bright))
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        embedding = x.flatten(2).transpose(1, 2)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = decoder(up(x) + skip)
        gain = torch.sigmoid(self.outconv(self.ending(x) + f_ref))[..., :height, :width]
        if not (with_mask and self.config.mask_head):
            return DaRegOutput(embedding, gain)
        size = f_ref.shape[-2:]
        features = [F.interpolate(conv(s), size=size, mode="bilinear", align_corners=False)
                    for conv, s in zip(self.encoder_adapt_convs, skips)]
        mask = torch.sigmoid(self.seg_conv_layers(torch.cat(features, 1)))
        return DaRegOutput(embedding, gain, mask[..., :height, :width])


# -- the diffusion side: prior tokens, guided VAE skips, LoRA targets ---------------------------


class BatchStatNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with the statistics of the batch at hand.

    The official inference never puts ``proj`` in eval mode, so its BatchNorms use the
    statistics of the image being processed (one image: over its token positions) and the
    running averages are never read. The buffers stay, so the official state dict loads.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class MaskVisualFusion(_Component):
    """Mask (N, 1, H, W) + DaReg tokens (N, HW/32², embedding_dim) -> prior tokens (N, HW/32², out_dim)."""

    def __init__(self, embedding_dim: int = 1024, mask_dims: tuple[int, int] = (256, 1024),
                 hidden_dim: int = 1024, out_dim: int = 1024):
        super().__init__()
        first, second = mask_dims
        self.mask_encoder = nn.Sequential(
            nn.PixelUnshuffle(8),
            nn.Conv2d(64, first, 3, stride=2, padding=1), BatchStatNorm2d(first), nn.ReLU(),
            nn.Conv2d(first, second, 3, stride=2, padding=1), BatchStatNorm2d(second), nn.ReLU(),
        )
        self.mlp = nn.Sequential(nn.Linear(second + embedding_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, out_dim), nn.ReLU())

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> MaskVisualFusion:
        """A module of the size ``state`` was saved at (official defaults where it does not say)."""
        keys = ("mask_encoder.1.weight", "mask_encoder.4.weight", "mlp.0.weight", "mlp.2.weight")
        if not all(k in state for k in keys):
            return cls()
        first, second, hidden, out = (state[k].shape[0] for k in keys)
        return cls(state["mlp.0.weight"].shape[1] - second, (first, second), hidden, out)

    def forward(self, embedding: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = self.mask_encoder(mask).flatten(2).transpose(1, 2)
        return self.mlp(torch.cat([tokens, embedding], dim=-1))


class GuidedSkip(nn.Module):
    """The official ``DRB``: ``conv1(skip) · sigmoid(mlp(mean of the prior tokens))`` per channel."""

    def __init__(self, in_channels: int, out_channels: int, prior_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.mlp = nn.Sequential(nn.Linear(prior_dim, out_channels), nn.ReLU(), nn.Linear(out_channels, out_channels))
        nn.init.constant_(self.conv1.weight, 1e-5)  # the official start: the skips begin almost closed

    def forward(self, skip: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        weight = torch.sigmoid(self.mlp(prior.mean(dim=1)))
        return self.conv1(skip) * weight[..., None, None].to(skip.dtype)


def attach_guided_skips(vae, prior_dim: int) -> None:
    """Give ``vae.decoder`` its ``skip_conv_<i>`` (i from 1), one per decoder block, as the
    official code does; block i gets the input of encoder block ``n - i`` (deepest first)."""
    channels = list(vae.config.block_out_channels)
    n = len(channels)
    encoder_inputs = [channels[max(i - 1, 0)] for i in range(n)]  # what each encoder block receives
    decoder_inputs = [channels[::-1][max(i - 1, 0)] for i in range(n)]
    device, dtype = vae.decoder.conv_in.weight.device, vae.decoder.conv_in.weight.dtype
    for i in range(n):
        skip = GuidedSkip(encoder_inputs[n - 1 - i], decoder_inputs[i], prior_dim).to(device, dtype)
        setattr(vae.decoder, f"skip_conv_{i + 1}", skip)


def encode_with_skips(vae, x: torch.Tensor,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(scaled latent sampled from the posterior, the input of every encoder block)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    encoder = vae.encoder
    h = encoder.conv_in(x)
    skips = []
    for block in encoder.down_blocks:
        skips.append(h)
        h = block(h)
    h = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(encoder.mid_block(h))))
    moments = vae.quant_conv(h) if vae.quant_conv is not None else h
    latent = DiagonalGaussianDistribution(moments).sample(generator)
    return latent * vae.config.scaling_factor, skips


def decode_with_skips(vae, latent: torch.Tensor, skips: list[torch.Tensor], prior: torch.Tensor) -> torch.Tensor:
    """Scaled latent -> image, each decoder block's input plus its guided encoder skip."""
    decoder = vae.decoder
    z = latent / vae.config.scaling_factor
    h = decoder.conv_in(vae.post_quant_conv(z) if vae.post_quant_conv is not None else z)
    h = decoder.mid_block(h, None)
    for i, (block, skip) in enumerate(zip(decoder.up_blocks, reversed(skips))):
        h = h + getattr(decoder, f"skip_conv_{i + 1}")(skip, prior)
        h = block(h, None)
    return decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(h)))


def widen_conv_in(unet, generator: torch.Generator | None = None) -> None:
    """Give ``unet`` the 8-channel first layer of GMODiff (regression latent, then condition latent).

    The official start: the pretrained kernel for the first half, random values of that
    kernel's spread for the second; ``config.in_channels`` follows.
    """
    old = unet.conv_in
    extra = torch.randn(old.weight.shape, generator=generator).to(old.weight) * old.weight.std()
    new = nn.Conv2d(2 * old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    new.to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(torch.cat([old.weight, extra], dim=1))
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)


# The official selection rules: substrings of parameter names (their lists also name conv1,
# conv_in, ..., skip_conv_1, ..., all of which contain "conv"); biases and norms are never adapted.
_UNET_PATTERNS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj")
_VAE_PATTERNS = ("conv", "to_k", "to_q", "to_v", "to_out.0")


def _adaptable(model: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Module names of the weights whose names contain a pattern, in the model's order."""
    names = (n for n, _ in model.named_parameters() if "bias" not in n and "norm" not in n)
    return [n.removesuffix(".weight") for n in names if any(p in n for p in patterns)]


def unet_lora_targets(unet: nn.Module) -> dict[str, list[str]]:
    """The UNet's adapted layers by adapter: ``encoder`` (down blocks and conv_in), ``decoder``
    (up blocks and conv_out), ``others`` (the middle block)."""
    groups: dict[str, list[str]] = {"encoder": [], "decoder": [], "others": []}
    for name in _adaptable(unet, _UNET_PATTERNS):
        if "down_blocks" in name or "conv_in" in name:
            groups["encoder"].append(name)
        elif "up_blocks" in name or "conv_out" in name:
            groups["decoder"].append(name)
        else:
            groups["others"].append(name)
    return groups


def vae_lora_targets(vae: nn.Module, part: str) -> list[str]:
    """The VAE's adapted layers of ``part`` ("encoder": the encoder and ``quant_conv``;
    "decoder": the decoder, all layers of the guided skips included when attached)."""
    names = [n for n in _adaptable(vae, _VAE_PATTERNS) if n.startswith(f"{part}.")]
    return names + ["quant_conv"] if part == "encoder" and vae.quant_conv is not None else names


def adapt_base_model(unet, vae, vae_c, rank: int, generator: torch.Generator | None = None) -> None:
    """GMODiff's fresh start on Stable Diffusion 2.1 base (official ``initialize_unet`` and
    ``initialize_vae``): the 8-channel ``conv_in``, the guided skips (prior tokens of the UNet's
    cross-attention width), and adapters of ``rank`` where the official code puts them; the
    adapters start as no-ops."""
    from .lora import add_lora

    widen_conv_in(unet, generator)
    attach_guided_skips(vae, unet.config.cross_attention_dim)
    for part, names in unet_lora_targets(unet).items():
        add_lora(unet, names, f"default_{part}", rank)
    for part in ("encoder", "decoder"):
        add_lora(vae, vae_lora_targets(vae, part), f"default_{part}", rank)
    add_lora(vae_c, vae_lora_targets(vae_c, "encoder"), "default_encoder", rank)
