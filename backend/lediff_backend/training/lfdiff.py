"""LF-Diff's two training stages (paper §4.1, §4.2) on simulated brackets.

``lediff train lfdiff-stage1 --data DIR --out RUN1`` trains LPENet and DHRNet jointly: the prior
z = LPENet(H) of the ground truth guides DHRNet(X, z); the loss is the L1 distance in the μ-law
domain, eq. (11) without its VGG-19 perceptual term (that needs pretrained VGG weights, which
nothing here may download). ``--model`` continues an earlier LF-Diff folder; without it the
networks start from random weights sized by the ``network`` option ({}: the paper's sizes).

``lediff train lfdiff-stage2 --model RUN1/export --data DIR --out RUN2`` trains the prior's
diffusion model with eq. (15): LPENet, frozen, gives the target prior z; the condition encoder
(LPENet_DM) and the denoiser learn ``‖ε − ε_θ(z_t, D, t)‖²`` at a uniform random timestep plus
``‖ẑ − z‖₁``, where ẑ is the S-step DDIM reverse process (with gradients) from
z_T ~ q(z_T | z); with ``joint`` (the paper's joint training) DHRNet is fine-tuned on ẑ with
the stage-one loss as well, otherwise it stays frozen (the paper's Split-Training ablation).

Data: the loop's ``BracketDataset`` (random views, three exposures through one sampled CRF,
darkest first); the target is the view in the darkest exposure's units, clipped to [0, 1] (the
range the μ-law output covers). The simulated brackets are static, so motion (ghosts) is not
learned from them; Adam at lr 1e-4 on 128² views, batch 16 per GPU (64 on the paper's four),
float32 (``configs/lfdiff.json``); the paper's step decay of the rate is not implemented.
The export is a complete LF-Diff folder (``lfdiff_weights``), ``lpenet`` included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInput, MissingWeights
from ..models.lfdiff import LFDiffConfig, build_scheduler, mu_law, network_inputs, reverse_prior
from ..pipelines.lfdiff import LFDiffPipeline
from .config import TrainConfig, recipe_options
from .loop import optimizer_step

__all__ = ["RECIPES", "LFDiffOptions", "StageOne", "StageTwo", "LFDiffRecipe"]

RECIPES = ("lfdiff-stage1", "lfdiff-stage2")


@dataclass(frozen=True)
class LFDiffOptions:
    network: dict  # LFDiffConfig fields of a fresh stage-one model ({}: the paper's sizes)
    joint: bool  # stage two: fine-tune DHRNet on the sampled prior (the paper) or keep it frozen


def inputs_and_target(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """X (N, 3, 6, H, W) of a batch's brackets, and its HDR (N, 3, H, W) in the darkest exposure's
    units, clipped to [0, 1] (``log_hdr`` is in the middle exposure's)."""
    evs = batch["evs"].float()
    to_darkest = torch.exp2(evs[:, :1] - evs[:, 1:2])[..., None, None]
    return network_inputs(batch["bracket"].float(), evs), (batch["log_hdr"].float().exp() * to_darkest).clamp(0, 1)


class StageOne(nn.Module):
    """LPENet and DHRNet in one module, so data-parallel training sees every parameter in one call."""

    def __init__(self, lpenet: nn.Module, dhrnet: nn.Module):
        super().__init__()
        self.lpenet = lpenet
        self.dhrnet = dhrnet

    def forward(self, inputs: torch.Tensor, hdr: torch.Tensor) -> torch.Tensor:
        return self.dhrnet(inputs, self.lpenet(hdr))


class StageTwo(nn.Module):
    """The condition encoder, the denoiser and (joint training) DHRNet; eq. (15)'s terms in one call."""

    def __init__(self, condition: nn.Module, denoiser: nn.Module, dhrnet: nn.Module | None, config: LFDiffConfig):
        super().__init__()
        self.condition = condition
        self.denoiser = denoiser
        self.dhrnet = dhrnet
        self.scheduler = build_scheduler(config)
        self.steps = config.sampling_steps

    def forward(self, inputs: torch.Tensor, prior: torch.Tensor, generator: torch.Generator):
        """(ε loss, prior L1, DHRNet's μ-law output on ẑ or None) for inputs X and the target prior z."""
        condition = self.condition(inputs)
        n, device, last = prior.shape[0], prior.device, self.scheduler.config.num_train_timesteps - 1
        noise = torch.randn(prior.shape, generator=generator, device=device)
        t = torch.randint(0, last + 1, (n,), generator=generator, device=device)
        predicted = self.denoiser(torch.cat([self.scheduler.add_noise(prior, noise, t), condition], 1), t).sample
        start_noise = torch.randn(prior.shape, generator=generator, device=device)
        start = self.scheduler.add_noise(prior, start_noise, torch.full((n,), last, device=device))
        sampled = reverse_prior(self.denoiser, self.scheduler, condition, start, self.steps)
        tonemapped = self.dhrnet(inputs, sampled) if self.dhrnet is not None else None
        return F.mse_loss(predicted, noise), F.l1_loss(sampled, prior), tonemapped


def _picture(tonemapped: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Rows of [prediction | truth]: μ-law images are display pictures as they are."""
    pairs = torch.cat([tonemapped, target], dim=-1).clamp(0, 1).float().cpu().numpy()
    return np.concatenate(list(pairs.transpose(0, 2, 3, 1)), axis=0)


class LFDiffRecipe:
    """One of LF-Diff's training stages (``recipe`` in ``RECIPES``) from ``base`` or from scratch."""

    def __init__(self, recipe: str, base: str | Path | None, options: dict):
        if recipe not in RECIPES:
            raise BadInput(f"unknown LF-Diff recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        self.stage = RECIPES.index(recipe) + 1
        self.options = recipe_options(LFDiffOptions, options)
        if base is None:
            if self.stage == 2:
                raise BadInput("lfdiff-stage2 continues a stage-one model: pass --model RUN1/export")
            try:
                self.pipe = LFDiffPipeline.from_config(LFDiffConfig.from_dict(self.options.network))
            except (TypeError, ValueError) as exc:
                raise BadInput(f"the network option: {exc}") from exc
        else:
            if self.options.network:
                raise BadInput(f"the network option sizes a fresh model; {base} has its own config.json")
            self.pipe = LFDiffPipeline.from_pretrained(base)
            if self.pipe.lpenet is None:
                raise MissingWeights(f"{base}: lpenet.safetensors missing; training needs stage one's prior extractor")
        pipe = self.pipe
        if self.stage == 1:
            self.model: nn.Module = StageOne(pipe.lpenet, pipe.dhrnet)
        else:
            pipe.lpenet.requires_grad_(False)
            pipe.dhrnet.requires_grad_(self.options.joint)
            dhrnet = pipe.dhrnet if self.options.joint else None
            self.model = StageTwo(pipe.condition, pipe.denoiser, dhrnet, pipe.config)

    def setup(self, accelerator, config: TrainConfig) -> None:
        if config.latent_cache:
            raise BadInput("LF-Diff trains on pixels: set latent_cache to null (no --cache-dir)")
        if config.resolution % self.pipe.config.multiple:
            raise BadInput(f"LF-Diff's training resolution must be a multiple of {self.pipe.config.multiple}")
        self.accelerator = accelerator
        self.max_grad_norm = config.max_grad_norm
        self.pipe.to(accelerator.device)
        adam = dict(lr=config.learning_rate, betas=tuple(config.adam_betas), weight_decay=config.adam_weight_decay)
        optimizer = torch.optim.Adam(self.trainable(), **adam)
        self.model, self.optimizer = accelerator.prepare(self.model, optimizer)

    def modules(self) -> list[nn.Module]:
        return [self.model]

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_step(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        inputs, hdr = inputs_and_target(batch)
        target = mu_law(hdr, self.pipe.config.mu)
        if self.stage == 1:
            loss = F.l1_loss(self.model(inputs, hdr), target)
            losses = {"rec": loss}
        else:
            with torch.no_grad():
                prior = self.pipe.lpenet(hdr)
            eps, prior_l1, tonemapped = self.model(inputs, prior, generator)
            losses = {"eps": eps, "prior": prior_l1}
            loss = eps + prior_l1
            if tonemapped is not None:
                losses["rec"] = F.l1_loss(tonemapped, target)
                loss = loss + losses["rec"]
        optimizer_step(self.accelerator, loss, self.optimizer, self.trainable(), self.max_grad_norm)
        losses["loss"] = loss
        return losses

    @torch.no_grad()
    def validate(self, batch: dict) -> tuple[np.ndarray, dict[str, float]]:
        """Stage one: DHRNet on the ground truth's prior; stage two: on a prior sampled from noise."""
        batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
        inputs, hdr = inputs_and_target(batch)
        if self.stage == 1:
            prior = self.pipe.lpenet(hdr)
        else:
            generator = torch.Generator(self.accelerator.device).manual_seed(0)
            prior = self.pipe.sample_prior(inputs, self.pipe.config.sampling_steps, generator)
        tonemapped = self.pipe.dhrnet(inputs, prior)
        target = mu_law(hdr, self.pipe.config.mu)
        mse = float(F.mse_loss(tonemapped, target))
        metrics = {"l1_mu": float(F.l1_loss(tonemapped, target)), "psnr_mu": -10.0 * np.log10(max(mse, 1e-12))}
        return _picture(tonemapped, target), metrics

    def export(self, folder: Path) -> None:
        self.pipe.save_pretrained(folder)
