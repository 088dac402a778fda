"""Recipe (a): the latent fusion module and the HDR decoder, fine-tuned together (paper §3.2).

The frozen Stable Diffusion encoder maps a simulated bracket {I-, I0, I+} to latents
{C-, C0, C+}; ``LatentFusion`` merges them; the VAE decoder decodes the merged latent to
log-HDR, compared with the true HDR in log space (``data.simulate_sample`` gives the target):

    L = L_rec + λ·L_GAN,  L_rec = |D(F(C-, C0, C+)) − log H|₁

with the LDM autoencoder's hinge PatchGAN and adaptive λ (``gan.py``), the GAN joining at
``gan_start`` steps, as the original VAE loss does. The perceptual (LPIPS) term of that loss is
left out: it needs pretrained VGG weights and is defined on display images, not log-HDR.
Adam, lr 1e-4 (``configs/decoder.json``).

Trainable: fusion, ``post_quant_conv`` and the decoder. Frozen: the encoder and ``quant_conv``,
so the latent space, and with it every denoiser, stays the base model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from torch import nn

from ..hdr.tonemap import auto_exposure_ev, reinhard
from .config import TrainConfig, recipe_options
from .data import batch_latents, encode_bracket, files_key
from .denoisers import load_conditional_unet
from .export import fusion_of, export_lediff_folder
from .gan import PatchDiscriminator, adaptive_weight, generator_loss, hinge_d_loss
from .loop import optimizer_step

__all__ = ["DecoderOptions", "FusionDecoder", "DecoderRecipe"]


@dataclass(frozen=True)
class DecoderOptions:
    gan_weight: float  # λ's factor on top of the adaptive weight (LDM: disc_weight)
    gan_start: int  # the step at which the GAN loss joins (LDM: disc_start)
    discriminator_channels: int
    discriminator_layers: int


class FusionDecoder(nn.Module):
    """Latent bracket (N, 3, C, h, w), scaled latents darkest first -> log-HDR (N, 3, H, W).

    One module for fusion and VAE, so data-parallel training sees every trained parameter in
    one forward call. The VAE's encoder is inside but frozen.
    """

    def __init__(self, fusion: nn.Module, vae: AutoencoderKL):
        super().__init__()
        self.fusion = fusion
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        merged = self.fusion(*latents.unbind(1))
        return self.vae.decode(merged / self.vae.config.scaling_factor).sample


def _picture(log_hdr: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Rows of [prediction | truth], tone-mapped alike (the truth's auto exposure, Reinhard)."""
    rows = []
    for pred, true in zip(log_hdr.float().exp().cpu().numpy(), target.float().exp().cpu().numpy()):
        pred, true = pred.transpose(1, 2, 0), true.transpose(1, 2, 0)
        ev = auto_exposure_ev(true)
        rows.append(np.concatenate([reinhard(pred, ev), reinhard(true, ev)], axis=1))
    return np.concatenate(rows, axis=0)


class DecoderRecipe:
    """Fine-tune fusion + HDR decoder from a Stable Diffusion or LEDiff folder ``base``.

    A LEDiff base continues from its decoder and fusion weights; a plain SD base starts from the
    SD decoder and the untrained fusion (the bracket mean). The export is a complete LEDiff
    folder with ``base``'s unet (widened with zero weights when ``base`` is plain SD: a
    placeholder until a denoiser is trained on top, see ``DenoiserRecipe(decoder=...)``).
    """

    cache_with_hdr = True

    def __init__(self, base: str | Path, options: dict):
        self.base = Path(base).absolute()
        self.options = recipe_options(DecoderOptions, options)
        vae = AutoencoderKL.from_pretrained(self.base, subfolder="vae", torch_dtype=torch.float32)
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
        self.model = FusionDecoder(fusion_of(self.base), vae)

    def cache_key(self) -> dict:
        return {"vae": files_key(self.base / "vae")}

    def _unwrapped(self) -> FusionDecoder:
        return self.accelerator.unwrap_model(self.model)

    def setup(self, accelerator, config: TrainConfig) -> None:
        self.accelerator = accelerator
        self.max_grad_norm = config.max_grad_norm
        # Built here, after the loop has seeded the random generators.
        discriminator = PatchDiscriminator(3, self.options.discriminator_channels, self.options.discriminator_layers)
        adam = dict(lr=config.learning_rate, betas=tuple(config.adam_betas), weight_decay=config.adam_weight_decay)
        g_opt = torch.optim.Adam(self.trainable(), **adam)
        d_opt = torch.optim.Adam(discriminator.parameters(), **adam)
        self.model, self.discriminator, self.g_opt, self.d_opt = accelerator.prepare(
            self.model, discriminator, g_opt, d_opt
        )

    def encode(self, bracket: torch.Tensor) -> torch.Tensor:
        return encode_bracket(self._unwrapped().vae, bracket)

    def modules(self) -> list[nn.Module]:
        return [self.model, self.discriminator]

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_step(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        latents = batch_latents(batch, self.encode)
        target = batch["log_hdr"]
        log_hdr = self.model(latents)
        rec = (log_hdr.float() - target).abs().mean()
        losses = {"rec": rec}
        loss = rec
        use_gan = step >= self.options.gan_start
        if use_gan:
            # The discriminator judges without collecting gradients: only the decoder learns here.
            judge = self.accelerator.unwrap_model(self.discriminator)
            frozen = {name: p.detach() for name, p in judge.named_parameters()}
            gan = generator_loss(torch.func.functional_call(judge, frozen, (log_hdr,)))
            last_layer = self._unwrapped().vae.decoder.conv_out.weight
            weight = self.options.gan_weight * adaptive_weight(rec, gan, last_layer)
            loss = rec + weight * gan
            losses.update(gan_g=gan, gan_weight=weight)
        optimizer_step(self.accelerator, loss, self.g_opt, self.trainable(), self.max_grad_norm)
        if use_gan:
            d_loss = hinge_d_loss(self.discriminator(target), self.discriminator(log_hdr.detach()))
            optimizer_step(
                self.accelerator, d_loss, self.d_opt, list(self.discriminator.parameters()), self.max_grad_norm
            )
            losses["gan_d"] = d_loss
        losses["loss"] = loss
        return losses

    @torch.no_grad()
    def validate(self, batch: dict) -> tuple[np.ndarray, dict[str, float]]:
        device = self.accelerator.device
        batch = {k: v.to(device) for k, v in batch.items()}
        model = self._unwrapped()
        model.eval()
        log_hdr = model(batch_latents(batch, self.encode)).float()
        model.train()
        rec = float((log_hdr - batch["log_hdr"]).abs().mean())
        return _picture(log_hdr, batch["log_hdr"]), {"rec": rec}

    def export(self, folder: Path) -> None:
        model = self._unwrapped()
        unet = load_conditional_unet(self.base)
        export_lediff_folder(folder, self.base, unet=unet, vae=model.vae, fusion=model.fusion)
