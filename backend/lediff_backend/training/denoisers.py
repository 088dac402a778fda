"""Recipe (b): the highlight and shadow denoisers, fine-tuned from a Stable Diffusion UNet (§3.3).

The conditional denoiser sees the noisy latent and the condition latent concatenated (in that
order, as ``LEDiffPipeline`` feeds them): the UNet's first layer is widened from 4 to 8 input
channels, the new channels' weights zero so the widened UNet starts as the pretrained one;
everything else keeps the pretrained weights. The loss is the standard denoising loss, eq. (3):
``‖ε − ε_θ(noisy target, condition, t)‖²`` with t uniform over the training timesteps.

Training pairs (condition -> target) from each bracket {C-, C0, C+}, as eq. (3) writes them:

- highlight ε_θ-: C0 -> C- and C+ -> C0 (generates darker latents, restoring highlights);
- shadow ε_θ+: C0 -> C+ and C- -> C0 (generates brighter latents, restoring shadows).

(§4 lists the same pairs as {I0, I+}, {I-, I0} and {I0, I-}, {I+, I0}, calling the first image
the condition; §3.3's equation and the inference the paper describes make the first the target,
and so does this recipe.) Every bracket gives both its pairs. The text condition is the fixed
``prompt`` (empty, as in LDR -> HDR conversion). Adam, lr 1e-5 (``configs/denoiser.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from ..errors import MissingWeights
from ..pipelines.previews import latent_preview
from .config import TrainConfig, recipe_options
from .data import batch_latents, encode_bracket, files_key
from .export import export_lediff_folder
from .loop import optimizer_step

__all__ = ["PAIRS", "DenoiserOptions", "widen_unet", "load_conditional_unet", "training_pairs", "DenoiserRecipe"]

# (condition, target) indices into the bracket (C-, C0, C+).
PAIRS = {"highlight": ((1, 0), (2, 1)), "shadow": ((1, 2), (0, 1))}


@dataclass(frozen=True)
class DenoiserOptions:
    prompt: str  # the text condition while training (the pipeline's LDR -> HDR prompt is "")
    gradient_checkpointing: bool  # trade compute for memory on the UNet
    validation_inference_steps: int  # DDIM steps of the validation samples


def widen_unet(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """Give ``unet`` a first layer for noisy + condition latents; the new weights are zero.

    The module is changed in place (and returned): ``conv_in`` takes twice its input channels,
    the first half keeping the pretrained kernel, and ``config.in_channels`` follows. With
    zero extra weights the widened UNet predicts exactly what the original did.
    """
    old = unet.conv_in
    new = nn.Conv2d(2 * old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    new.to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)
    return unet


def load_conditional_unet(base: Path) -> UNet2DConditionModel:
    """``base``'s UNet with 8 input channels: an official LEDiff UNet as is, an SD UNet widened."""
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", torch_dtype=torch.float32)
    if unet.config.in_channels == unet.config.out_channels:
        return widen_unet(unet)
    if unet.config.in_channels != 2 * unet.config.out_channels:
        raise MissingWeights(f"{base / 'unet'}: {unet.config.in_channels} input channels; expected 4 or 8")
    return unet


def training_pairs(latents: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(condition, target), each (2N, C, h, w), from (N, 3, C, h, w) brackets, pairs as ``PAIRS``."""
    pairs = PAIRS[kind]
    condition = torch.cat([latents[:, c] for c, _ in pairs])
    target = torch.cat([latents[:, t] for _, t in pairs])
    return condition, target


def _weight_dtype(accelerator) -> torch.dtype:
    """The dtype of the frozen models: half under mixed precision."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


class DenoiserRecipe:
    """Fine-tune the ``kind`` ("highlight" or "shadow") denoiser from the folder ``base``.

    ``base`` is a Stable Diffusion folder (its UNet is widened) or a LEDiff folder (fine-tuning
    continues). The export is a complete LEDiff folder: this UNet, ``base``'s text encoder,
    tokenizer and scheduler, and the HDR decoder and fusion of ``decoder`` (a LEDiff folder,
    e.g. a ``DecoderRecipe`` export; default ``base``, whose VAE decodes LDR if it is plain SD).
    """

    cache_with_hdr = False

    def __init__(self, kind: str, base: str | Path, options: dict, decoder: str | Path | None = None):
        if kind not in PAIRS:
            raise ValueError(f"kind must be one of {sorted(PAIRS)}, got {kind!r}")
        self.kind = kind
        self.base = Path(base).absolute()
        self.decoder = Path(decoder).absolute() if decoder else self.base
        self.options = recipe_options(DenoiserOptions, options)
        self.unet = load_conditional_unet(self.base)
        if self.options.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.noise_scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(self.base, subfolder="scheduler"))

    def cache_key(self) -> dict:
        return {"vae": files_key(self.base / "vae")}

    @torch.no_grad()
    def _prompt_embeds(self, device: torch.device) -> torch.Tensor:
        """The fixed text condition, (1, L, D), as ``LEDiffPipeline.encode_prompt`` computes it."""
        tokenizer = CLIPTokenizer.from_pretrained(self.base, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(self.base, subfolder="text_encoder").to(device)
        ids = tokenizer(
            [self.options.prompt],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return text_encoder(ids.to(device))[0]

    def setup(self, accelerator, config: TrainConfig) -> None:
        self.accelerator = accelerator
        self.max_grad_norm = config.max_grad_norm
        self.embeds = self._prompt_embeds(accelerator.device)
        vae = AutoencoderKL.from_pretrained(self.base, subfolder="vae", torch_dtype=_weight_dtype(accelerator))
        self.vae = vae.requires_grad_(False).to(accelerator.device)
        optimizer = torch.optim.Adam(
            self.unet.parameters(),
            lr=config.learning_rate,
            betas=tuple(config.adam_betas),
            weight_decay=config.adam_weight_decay,
        )
        self.unet, self.optimizer = accelerator.prepare(self.unet, optimizer)

    def encode(self, bracket: torch.Tensor) -> torch.Tensor:
        return encode_bracket(self.vae, bracket)

    def modules(self) -> list[nn.Module]:
        return [self.unet]

    def trainable(self) -> list[nn.Parameter]:
        return list(self.unet.parameters())

    def _predict(self, unet, noisy, condition, t) -> torch.Tensor:
        states = self.embeds.expand(noisy.shape[0], -1, -1)
        return unet(torch.cat([noisy, condition], dim=1), t, encoder_hidden_states=states).sample

    def train_step(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        condition, target = training_pairs(batch_latents(batch, self.encode), self.kind)
        noise = torch.randn(target.shape, generator=generator, device=target.device)
        steps = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (target.shape[0],), generator=generator, device=target.device)
        noisy = self.noise_scheduler.add_noise(target, noise, t)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            wanted = self.noise_scheduler.get_velocity(target, noise, t)
        else:
            wanted = noise
        loss = torch.nn.functional.mse_loss(self._predict(self.unet, noisy, condition, t).float(), wanted)
        optimizer_step(self.accelerator, loss, self.optimizer, self.trainable(), self.max_grad_norm)
        return {"loss": loss}

    @torch.no_grad()
    def validate(self, batch: dict) -> tuple[np.ndarray, dict[str, float]]:
        """Rows of [condition | generated | target] latent previews (DDIM from seeded noise)."""
        device = self.accelerator.device
        batch = {k: v.to(device) for k, v in batch.items()}
        condition, target = training_pairs(batch_latents(batch, self.encode), self.kind)
        unet = self.accelerator.unwrap_model(self.unet)
        unet.eval()
        scheduler = DDIMScheduler.from_config(self.noise_scheduler.config)
        scheduler.set_timesteps(self.options.validation_inference_steps, device=device)
        generator = torch.Generator(device).manual_seed(0)
        latents = torch.randn(target.shape, generator=generator, device=device)
        for t in scheduler.timesteps:
            noise = self._predict(unet, latents, condition, t.expand(latents.shape[0]))
            latents = scheduler.step(noise.float(), t, latents).prev_sample
        unet.train()
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        rows = [
            np.concatenate([latent_preview(x[None], scale) for x in (c, g, t)], axis=1)
            for c, g, t in zip(condition, latents, target)
        ]
        return np.concatenate(rows, axis=0), {"latent_mse": float(((latents - target) ** 2).mean())}

    def export(self, folder: Path) -> None:
        export_lediff_folder(folder, self.base, unet=self.accelerator.unwrap_model(self.unet), vae_from=self.decoder)
