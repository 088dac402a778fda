"""GMODiff's training on simulated brackets: the regression network, then the diffusion stage.

``lediff train gmodiff-dareg --data DIR --out RUN1`` trains DaReg, the official stages 1 and 2
in one run (``src/dareg/train_stage1.py``, ``train_stage2.py``): until ``mask_start`` steps the
whole network learns ``|G − G*|₁ + |μ(H) − μ(H*)|₁`` (gain map and the HDR it implies, μ the
μ-law with ``hdr_mu`` = 5000, the official ``L1MuLoss``); from then on the backbone is frozen and
the mask head learns binary cross-entropy against where that HDR is off by at least
``mask_threshold`` in luminance (official ``build_mask_target``). It starts from random weights
sized by ``network`` (``DaRegConfig`` fields; {}: the official sizes) or continues ``--model``
(a GMODiff folder). Adam at 2e-4, batch 16 of 256² views (the official values; its step counts
are epochs over its crops, these are ours). The export is ``model_zoo/dareg_mask.pth``.

``lediff train gmodiff --model RUN1/export --data DIR --out RUN2`` trains the diffusion stage
(official ``main_train_gmodiff.py``) with the frozen DaReg of ``--model`` on Stable Diffusion 2.1
base (``sd21-base`` in the models root, or the hub snapshot): LoRA of rank ``lora_rank`` on the
UNet, the VAE (encoder, decoder and guided skips) and the condition encoder, plus the UNet's
8-channel ``conv_in``, the prior module and the guided skips, all as the official code selects
them (``models.gmodiff``); a ``--model`` that also holds ``gmodiff.pkl`` continues from it. The
loss is ``|G − G*|₁ + |μ(H) − μ(H*)|₁`` of the one-step result; the official DISTS term is left
out (it needs pretrained VGG weights, which nothing here may download), and so is its GAN term
(off by default there too). AdamW at 5e-5, weight decay 0.01, batch 4 of 256² views, rank 16
(``train_stage3_gmodiff.sh``). The export is a complete GMODiff folder (``model_zoo/dareg_mask.pth``
and ``model_zoo/gmodiff.pkl``, the official layouts).

Data: the loop's simulated brackets (darkest first, one sampled CRF); targets in the darkest
exposure's units (``log_hdr`` is in the middle one's), the unit the official data use. The
simulated brackets are static, so ghosts are not learned from them. No latent cache: the VAE
encoder itself is adapted.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import weights
from ..errors import BadInput, MissingWeights
from ..gmodiff_weights import (
    BASE,
    CHECKPOINT,
    DAREG_FILES,
    gmodiff_checkpoint,
    load_dareg,
    load_gmodiff_checkpoint,
    read_gmodiff_checkpoint,
    save_dareg,
)
from ..models.gmodiff import (
    DaReg,
    DaRegConfig,
    MaskVisualFusion,
    adapt_base_model,
    dareg_inputs,
    gain_map,
    hdr_from_gain_map,
)
from .config import TrainConfig, recipe_options
from .decoder import _picture
from .loop import optimizer_step

__all__ = ["RECIPES", "DaRegOptions", "GMODiffOptions", "DaRegRecipe", "GMODiffRecipe", "gmodiff_recipe"]

RECIPES = ("gmodiff-dareg", "gmodiff")
_LUMA = (0.299, 0.587, 0.114)  # the official mask target's luminance weights


@dataclass(frozen=True)
class DaRegOptions:
    network: dict  # DaRegConfig fields of a fresh network ({}: the official sizes)
    mask_start: int  # the step from which the backbone is frozen and the mask head learns
    mask_threshold: float  # luminance error (darkest exposure's units) that the mask marks
    hdr_mu: float  # the μ-law's μ of the HDR loss


@dataclass(frozen=True)
class GMODiffOptions:
    lora_rank: int
    prior_dims: list  # MaskVisualFusion's mask-encoder widths and MLP width (official 256, 1024, 1024)
    hdr_mu: float


def _mu_law(hdr: torch.Tensor, mu: float) -> torch.Tensor:
    return torch.log1p(mu * hdr.clamp_min(0)) / math.log1p(mu)


def _targets(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bracket (N, 3, 3, H, W), evs (N, 3), HDR (N, 3, H, W) in the darkest exposure's units)."""
    evs = batch["evs"].float()
    to_darkest = torch.exp2(evs[:, :1] - evs[:, 1:2])[..., None, None]
    return batch["bracket"].float(), evs, batch["log_hdr"].float().exp() * to_darkest


def _losses(gain: torch.Tensor, bracket: torch.Tensor, hdr: torch.Tensor, mu: float) -> dict[str, torch.Tensor]:
    """The official gain-map and μ-law HDR L1 terms of a predicted gain map (reference: image 1)."""
    reference = bracket[:, 1]
    gain_loss = (gain.float() - gain_map(hdr, reference)).abs().mean()
    hdr_loss = (_mu_law(hdr_from_gain_map(gain.float(), reference), mu) - _mu_law(hdr, mu)).abs().mean()
    return {"gain": gain_loss, "hdr": hdr_loss, "loss": gain_loss + hdr_loss}


def _folder(model: str | Path) -> Path:
    """A GMODiff folder: ``model`` itself when it holds ``model_zoo/``, else ``model/gmodiff``."""
    path = Path(model).expanduser().absolute()
    return path if (path / "model_zoo").is_dir() else path / "gmodiff"


def _dareg_file(folder: Path) -> Path | None:
    return next((folder / n for n in DAREG_FILES if (folder / n).is_file()), None)


def _export(folder: Path, write) -> None:
    """``write(staging)`` into a folder beside ``folder``, then move it into place."""
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Recipe:
    """What both recipes share: the check of the loop's settings, and validation."""

    def _check(self, config: TrainConfig, multiple: int) -> None:
        if config.latent_cache:
            raise BadInput("the GMODiff recipes train on images: set latent_cache to null (no --cache-dir)")
        if config.resolution % multiple:
            raise BadInput(f"resolution must be a multiple of {multiple} for GMODiff, got {config.resolution}")

    @torch.no_grad()
    def validate(self, batch: dict) -> tuple[np.ndarray, dict[str, float]]:
        bracket, evs, hdr = (t.to(self.accelerator.device) for t in _targets(batch))
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        gain = self._gain(model, bracket, evs, torch.Generator(self.accelerator.device).manual_seed(0))
        model.train()
        losses = _losses(gain, bracket, hdr, self.options.hdr_mu)
        prediction = hdr_from_gain_map(gain.float(), bracket[:, 1])
        picture = _picture(prediction.clamp_min(1e-8).log(), hdr.clamp_min(1e-8).log())
        return picture, {k: float(v) for k, v in losses.items()}


class DaRegRecipe(_Recipe):
    """The regression network, official stages 1 and 2 (see the module docstring)."""

    def __init__(self, base: str | Path | None, options: dict):
        self.options = recipe_options(DaRegOptions, options)
        if base is None:
            self.model = DaReg(DaRegConfig(**{k: tuple(v) if isinstance(v, list) else v
                                              for k, v in self.options.network.items()}))
        else:
            path = _dareg_file(_folder(base))
            if path is None:
                raise MissingWeights(f"{_folder(base) / DAREG_FILES[1]}: missing (the DaReg to continue)")
            self.model = load_dareg(path).train().requires_grad_(True)
        if not self.model.config.mask_head:
            raise BadInput("gmodiff-dareg trains the mask head too: network.mask_head must be true")

    def setup(self, accelerator, config: TrainConfig) -> None:
        self._check(config, self.model.config.scale)
        self.accelerator = accelerator
        self.max_grad_norm = config.max_grad_norm
        adam = dict(lr=config.learning_rate, betas=tuple(config.adam_betas), weight_decay=config.adam_weight_decay)
        self.model, self.optimizer = accelerator.prepare(self.model, torch.optim.Adam(self.model.parameters(), **adam))

    def modules(self) -> list[nn.Module]:
        return [self.model]

    def trainable(self) -> list[nn.Parameter]:
        return list(self.accelerator.unwrap_model(self.model).parameters())

    @staticmethod
    def _gain(model, bracket, evs, generator) -> torch.Tensor:
        return model(*dareg_inputs(bracket, evs), with_mask=False).gain_map

    def train_step(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        bracket, evs, hdr = _targets(batch)
        inputs = dareg_inputs(bracket, evs)
        if step < self.options.mask_start:
            losses = _losses(self.model(*inputs, with_mask=False).gain_map, bracket, hdr, self.options.hdr_mu)
        else:  # stage 2: the backbone frozen (official freeze_pretrained_layers), the mask head learns
            model = self.accelerator.unwrap_model(self.model)
            head = {id(p) for p in model.mask_head_parameters()}
            for p in model.parameters():
                p.requires_grad_(id(p) in head)
            out = self.model(*inputs)
            error = (hdr_from_gain_map(out.gain_map, bracket[:, 1]) - hdr).abs()
            luma = sum(w * error[:, c] for c, w in enumerate(_LUMA))[:, None]
            target = (luma >= self.options.mask_threshold).float()
            mask = F.binary_cross_entropy(out.mask.float(), target)
            losses = {"mask": mask, "loss": mask}
        optimizer_step(self.accelerator, losses["loss"], self.optimizer, self.trainable(), self.max_grad_norm)
        return losses

    def export(self, folder: Path) -> None:
        _export(folder, lambda staging: save_dareg(self.accelerator.unwrap_model(self.model), staging / DAREG_FILES[1]))


class _StageThree(nn.Module):
    """The trained modules of the diffusion stage in one module (data parallel sees them in one
    call); the forward is the pipeline's, with gradients: DaReg (frozen) -> prior -> encode ->
    one step -> decoded gain map in [0, 1]."""

    def __init__(self, pipe):
        super().__init__()
        self.unet, self.vae, self.condition_vae, self.proj = pipe.unet, pipe.vae, pipe.condition_vae, pipe.proj
        self.pipe = pipe

    def forward(self, bracket: torch.Tensor, evs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        pipe = self.pipe
        with torch.no_grad():
            regression = pipe.dareg(*dareg_inputs(bracket, evs))
        prior = self.proj(regression.embedding, regression.mask)
        latents, condition, skips = pipe.encode(bracket[:, 0], regression.gain_map, generator)
        return pipe.decode(pipe.denoise(latents, condition, prior), skips, prior)


class GMODiffRecipe(_Recipe):
    """The diffusion stage on a trained DaReg (see the module docstring)."""

    def __init__(self, folder: str | Path, base: str | Path, options: dict):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        from ..pipelines.gmodiff import GMODiffPipeline

        self.options = recipe_options(GMODiffOptions, options)
        self.folder = _folder(folder)
        self.dareg_file = _dareg_file(self.folder)
        if self.dareg_file is None:
            raise MissingWeights(f"{self.folder / DAREG_FILES[1]}: missing; train it first (lediff train"
                                 f" gmodiff-dareg) and pass its export as --model")
        base = Path(base)
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        vae, vae_c = (AutoencoderKL.from_pretrained(base, subfolder="vae") for _ in range(2))
        for model in (unet, vae, vae_c):
            model.requires_grad_(False)
        dareg = load_dareg(self.dareg_file)
        if (self.folder / CHECKPOINT).is_file():
            proj = load_gmodiff_checkpoint(read_gmodiff_checkpoint(self.folder / CHECKPOINT), unet, vae, vae_c,
                                           self.folder / CHECKPOINT)
        else:
            first, second, hidden = self.options.prior_dims
            proj = MaskVisualFusion(dareg.config.channels[-1], (first, second), hidden, unet.config.cross_attention_dim)
            adapt_base_model(unet, vae, vae_c, self.options.lora_rank)
        pipe = GMODiffPipeline(dareg, proj, vae, vae_c, unet,
                               DDPMScheduler.from_pretrained(base, subfolder="scheduler"))
        self.model = _StageThree(pipe)
        for name, p in self.model.named_parameters():  # the official collect_generator_params
            p.requires_grad_("lora" in name or "skip_conv_" in name or name.startswith(("unet.conv_in.", "proj.")))

    def setup(self, accelerator, config: TrainConfig) -> None:
        self._check(config, self.model.pipe.dareg.config.scale)
        self.accelerator = accelerator
        self.max_grad_norm = config.max_grad_norm
        self.model.pipe.dareg.to(accelerator.device)
        optimizer = torch.optim.AdamW(self.trainable(), lr=config.learning_rate, betas=tuple(config.adam_betas),
                                      weight_decay=config.adam_weight_decay)
        self.model, self.optimizer = accelerator.prepare(self.model, optimizer)

    def modules(self) -> list[nn.Module]:
        return [self.model]

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @staticmethod
    def _gain(model, bracket, evs, generator) -> torch.Tensor:
        return model(bracket, evs, generator)

    def train_step(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        bracket, evs, hdr = _targets(batch)
        losses = _losses(self.model(bracket, evs, generator), bracket, hdr, self.options.hdr_mu)
        optimizer_step(self.accelerator, losses["loss"], self.optimizer, self.trainable(), self.max_grad_norm)
        return losses

    def export(self, folder: Path) -> None:
        model = self.accelerator.unwrap_model(self.model)

        def write(staging: Path) -> None:
            (staging / "model_zoo").mkdir(parents=True)
            shutil.copy(self.dareg_file, staging / "model_zoo" / self.dareg_file.name)
            checkpoint = gmodiff_checkpoint(model.unet, model.vae, model.condition_vae, model.proj)
            torch.save(checkpoint, staging / CHECKPOINT)

        _export(folder, write)


def gmodiff_recipe(recipe: str, model: str | None, model_dir: str | None, options: dict):
    """The recipe ``recipe`` ("gmodiff-dareg" or "gmodiff") for ``lediff train``."""
    if recipe == "gmodiff-dareg":
        return DaRegRecipe(model, options)
    if model is None:
        model = str(weights.models_root(model_dir))
    return GMODiffRecipe(model, weights.find_sd_folder(BASE, model_dir=model_dir), options)
