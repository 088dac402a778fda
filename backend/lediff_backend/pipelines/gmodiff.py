"""GMODiff (ECCV 2026, github.com/gbymat/GMODiff) as a diffusers pipeline and a bracket-merge engine.

Three exposures (darkest, reference, brightest) become HDR in one diffusion step (the official
``main_test_gmodiff.py`` with ``GMODiff_test``):

1. **regression**: ``DaReg`` reads each exposure as ``[L^2.2 / t, L]`` (exposure times
   relative to the darkest, as in the official data, whose ``exposure.txt`` starts the darkest
   at 0 EV) and gives a gain map over the reference, bottleneck tokens and an error mask;
   ``MaskVisualFusion`` turns tokens and mask into the prior tokens. The condition VAE (SD's
   encoder with its own LoRA) encodes the darkest exposure (``2L − 1``), the main VAE encodes the
   regression gain map (``2G − 1``), both as posterior *samples* (``generator`` draws them),
   keeping the main encoder's block inputs for the decoder;
2. **denoise**: the 8-channel UNet sees [regression latent, condition latent] at t = 499 with
   the prior tokens as ``encoder_hidden_states`` (no text); one DDPM step from t = 499 to the
   clean latent, ``x0 = (x − √(1−ᾱ)·ε) / √ᾱ`` (clipped only if the scheduler config says
   ``clip_sample``; SD 2.1 base's does not). That is what diffusers 0.25's ``DDPMScheduler.step``
   returns after ``set_timesteps(1)``, the official call: its previous timestep is negative, so
   ᾱ_prev = 1; its added noise has variance 0 (clamped to 1e-20) and is left out. Today's
   diffusers look t up among the set timesteps instead, so the step is written out here.
   Latents larger than 96 are denoised in 96-latent windows overlapping by 32, as the official
   script does, blended by ``map_tiles``.
3. **decode**: the VAE decoder, each block's input plus its guided skip, gives the gain map
   ``G`` (clamped to [-1, 1], then ``0.5·x + 0.5``); ``H = (L_ref + 1/64)·(101^G − 1)/100`` is in
   the darkest exposure's units, multiplied by ``2^(ev_ref − ev_dark)`` into the reference's
   (its white is 1). The gain map's sigmoid range (ratio ≤ 1) is what fixes those units: in
   the darkest exposure's units HDR never exceeds the reference's ``L + 1/64`` by much.

Inputs are padded by repeating their edges to multiples of 32 (DaReg's down-scaling, which
also makes the mask tokens line up with its bottleneck tokens; at least 64, so the prior's
BatchNorms see more than one position) and the outputs cropped back. Progress and cancel: the
``callback_on_step_end(pipe, step, timestep, tensors)`` runs after each of the three stages
(``pipe.stage``, ``step`` counts them up to ``pipe.num_stages``); setting ``pipe._interrupt``
stops the run there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput

from ..models.gmodiff import (
    TIMESTEP,
    DaReg,
    MaskVisualFusion,
    dareg_inputs,
    decode_with_skips,
    encode_with_skips,
    hdr_from_gain_map,
)
from .checks import RunState, bracket_problem, check_run_inputs, run_reporting, three_exposure_order
from .tiling import map_tiles

__all__ = ["GMODiffPipeline", "GMODiffPipelineOutput", "load_pipeline", "merge_bracket"]

PAD_MULTIPLE = 32  # DaReg's down-scaling (the official script pads to it too)
MIN_SIZE = 64
LATENT_TILE, LATENT_OVERLAP = 96, 32  # the official --latent_tiled_size / --latent_tiled_overlap
STAGES = ("regression", "denoise", "decode")

Progress = Callable[[str, int, int], None]


@dataclass
class GMODiffPipelineOutput(BaseOutput):
    """``images``: HDR in the reference exposure's units, (N, H, W, 3) float32 for "np",
    (N, 3, H, W) for "pt", the denoised latent for "latent"; ``gain_maps``: the decoded gain maps
    in [0, 1] in the same form (None for "latent"); both None when interrupted."""

    images: np.ndarray | torch.Tensor | None
    gain_maps: np.ndarray | torch.Tensor | None = None
    interrupted: bool = False


class GMODiffPipeline(RunState, DiffusionPipeline):
    """Exposure bracket -> HDR with GMODiff: ``dareg``, ``proj``, ``vae`` (with guided skips),
    ``condition_vae``, ``unet`` (8 input channels) and ``scheduler`` (for its ᾱ and prediction type)."""

    model_cpu_offload_seq = "dareg->proj->condition_vae->unet->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, dareg: DaReg, proj: MaskVisualFusion, vae: AutoencoderKL, condition_vae: AutoencoderKL,
                 unet: UNet2DConditionModel, scheduler: DDPMScheduler):
        super().__init__()
        if unet.config.in_channels != 2 * vae.config.latent_channels:
            raise ValueError(f"the GMODiff UNet reads two latents; this one has {unet.config.in_channels} channels")
        if scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"one-step denoising needs epsilon or v prediction, not"
                             f" {scheduler.config.prediction_type}")
        self.register_modules(dareg=dareg, proj=proj, vae=vae, condition_vae=condition_vae, unet=unet,
                              scheduler=scheduler)

    @property
    def num_stages(self) -> int:
        return len(STAGES)

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike | None = None,
                        base_model_dir: str | os.PathLike | None = None,
                        torch_dtype: torch.dtype = torch.float32) -> GMODiffPipeline:
        """The pipeline from the official files (``gmodiff_weights.find_gmodiff``), on the CPU.

        The adapters are merged into the SD 2.1 base layers; UNet and VAEs take ``torch_dtype``,
        DaReg and ``proj`` stay float32. Missing or wrong files raise ``errors.MissingWeights``.
        """
        from ..gmodiff_weights import find_gmodiff, load_dareg, load_gmodiff_checkpoint, read_gmodiff_checkpoint
        from ..models.lora import merge_lora
        from .lediff_engine import loading_errors

        files = find_gmodiff(model_dir, base_model_dir)
        with loading_errors(files.base):
            unet = UNet2DConditionModel.from_pretrained(files.base, subfolder="unet")
            vae, condition_vae = (AutoencoderKL.from_pretrained(files.base, subfolder="vae") for _ in range(2))
            scheduler = DDPMScheduler.from_pretrained(files.base, subfolder="scheduler")
        proj = load_gmodiff_checkpoint(read_gmodiff_checkpoint(files.checkpoint), unet, vae, condition_vae,
                                       files.checkpoint)
        unet, vae, condition_vae = (merge_lora(m).eval() for m in (unet, vae, condition_vae))
        if torch_dtype != torch.float32:
            unet, vae, condition_vae = (m.to(dtype=torch_dtype) for m in (unet, vae, condition_vae))
        pipe = cls(load_dareg(files.dareg), proj.eval(), vae, condition_vae, unet, scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- inputs ---------------------------------------------------------------------------------

    def check_inputs(self, images, evs, output_type, callback_on_step_end_tensor_inputs) -> None:
        problem = bracket_problem(images, evs, "GMODiff")
        if problem:
            raise ValueError(problem)
        if not evs[0] < evs[1] < evs[2]:
            raise ValueError(f"the EVs must rise from the darkest through the reference to the brightest, got {evs}")
        check_run_inputs(1, 0.0, output_type, callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def _pad(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) -> (1, 3, H', W') on the execution device, edges repeated up to ``PAD_MULTIPLE``s."""
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
        height, width = x.shape[-2:]
        size = [max(MIN_SIZE, -(-n // PAD_MULTIPLE) * PAD_MULTIPLE) for n in (height, width)]
        return F.pad(x, (0, size[1] - width, 0, size[0] - height), mode="replicate").to(self._execution_device)

    # -- the stages (the training recipe runs them too, with gradients) --------------------------

    def encode(self, dark: torch.Tensor, gain: torch.Tensor, generator: torch.Generator | None):
        """(regression latent, condition latent, the main encoder's block inputs) of the darkest
        exposure and the regression gain map, both (N, 3, H, W) in [0, 1]; posterior samples."""
        condition_vae = self.condition_vae
        posterior = condition_vae.encode((2 * dark - 1).to(condition_vae.dtype)).latent_dist
        condition = posterior.sample(generator) * condition_vae.config.scaling_factor
        latents, skips = encode_with_skips(self.vae, (2 * gain - 1).to(self.vae.dtype), generator)
        return latents.float(), condition, skips

    def denoise(self, latents: torch.Tensor, condition: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """One step from t = 499 to the clean latent, windowed like the official script."""
        unet = self.unet
        states = prior.to(unet.dtype)

        def predict(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            inputs = torch.cat([x, c], dim=1).to(unet.dtype)
            return unet(inputs, TIMESTEP, encoder_hidden_states=states.expand(len(x), -1, -1), return_dict=False)[0]

        output = map_tiles(predict, [latents, condition], (LATENT_TILE, LATENT_TILE), LATENT_OVERLAP, wrap=False)
        config = self.scheduler.config
        alpha = self.scheduler.alphas_cumprod[TIMESTEP].to(latents.device, torch.float32)
        output = output.float()
        if config.prediction_type == "v_prediction":
            clean = alpha.sqrt() * latents - (1 - alpha).sqrt() * output
        else:
            clean = (latents - (1 - alpha).sqrt() * output) / alpha.sqrt()
        # as DDPMScheduler.step does (SD 2.1 base's config turns it off)
        return clean.clamp(-config.clip_sample_range, config.clip_sample_range) if config.clip_sample else clean

    def decode(self, latents: torch.Tensor, skips: list[torch.Tensor], prior: torch.Tensor) -> torch.Tensor:
        """The gain map (N, 3, H, W) in [0, 1] of a denoised latent."""
        vae = self.vae
        decoded = decode_with_skips(vae, latents.to(vae.dtype), skips, prior.to(vae.dtype))
        return decoded.float().clamp(-1, 1) * 0.5 + 0.5

    def _callback(self, callback, step: int, latents: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """Run the step callback after stage ``step``; it may replace ``latents``."""
        self.stage = STAGES[step]
        if callback is None:
            return latents
        out = callback(self, step, TIMESTEP, {k: latents for k in names}) or {}
        return out.get("latents", latents)

    @torch.no_grad()
    def __call__(
        self,
        images: Sequence[np.ndarray],
        evs: Sequence[float],
        generator: torch.Generator | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[["GMODiffPipeline", int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> GMODiffPipelineOutput | tuple:
        """Merge ``images`` ((H, W, 3) display values in [0, 1]: darkest, reference, brightest)
        shot at ``evs`` (stops; only differences matter) into HDR in the reference's units."""
        self.check_inputs(images, evs, output_type, callback_on_step_end_tensor_inputs)
        self._interrupt = False
        names = callback_on_step_end_tensor_inputs
        height, width = images[1].shape[:2]
        bracket = torch.stack([self._pad(im) for im in images], dim=1)  # (1, 3, 3, H', W')
        ev_tensor = torch.tensor([evs], dtype=torch.float32, device=bracket.device)

        # 1. regression and prior tokens; the two encodings
        regression = self.dareg(*dareg_inputs(bracket, ev_tensor))
        prior = self.proj(regression.embedding, regression.mask)
        latents, condition, skips = self.encode(bracket[:, 0], regression.gain_map, generator)
        latents = self._callback(callback_on_step_end, 0, latents, names)
        # 2. one denoising step
        if not self.interrupt:
            latents = self._callback(callback_on_step_end, 1, self.denoise(latents, condition, prior), names)
        # 3. gain map -> HDR in the reference's units
        if self.interrupt:
            self.maybe_free_model_hooks()
            return GMODiffPipelineOutput(images=None, interrupted=True) if return_dict else (None, None, True)
        if output_type == "latent":
            result, gains = latents, None
        else:
            gains = self.decode(latents, skips, prior)[..., :height, :width]
            reference = bracket[:, 1, :, :height, :width]
            result = hdr_from_gain_map(gains, reference) * 2.0 ** (evs[1] - evs[0])
            if output_type == "np":
                result, gains = (t.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32) for t in (result, gains))
        self._callback(callback_on_step_end, 2, latents, names)
        self.maybe_free_model_hooks()
        return GMODiffPipelineOutput(result, gains) if return_dict else (result, gains, False)


# -- the merge engine ----------------------------------------------------------------------------


def load_pipeline(model_dir: str | os.PathLike | None, device: str = "auto") -> GMODiffPipeline:
    """GMODiff from ``model_dir`` (a models root or GMODiff's own folder), on ``device`` in its dtype."""
    from .lediff_engine import default_dtype, resolve_device

    torch_device = resolve_device(device)
    return GMODiffPipeline.from_pretrained(model_dir, torch_dtype=default_dtype(torch_device)).to(torch_device)


def merge_bracket(
    images: Sequence[np.ndarray],
    evs: Sequence[float],
    *,
    reference: int,
    model_dir: str | os.PathLike | None,
    device: str = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    pipeline: GMODiffPipeline | None = None,
) -> np.ndarray:
    """The ``gmodiff`` merge engine: three aligned (H, W, 3) display-encoded images in [0, 1] and
    their EVs -> (H, W, 3) float32 scene-linear HDR in the reference exposure's units.

    ``model_dir``: a models root or GMODiff's own folder (``gmodiff_weights.find_gmodiff``),
    loaded unless a warm ``pipeline`` (``load_pipeline``) is given. ``seed`` draws the VAE
    posterior samples. ``progress(stage, step, total)`` reports loading and the three stages;
    ``should_cancel()`` is polled after each (``errors.Cancelled``).
    """
    order = three_exposure_order(images, evs, reference, "GMODiff")
    if pipeline is None:
        if progress is not None:
            progress("load", 0, 1)
        pipeline = load_pipeline(model_dir, device)
        if progress is not None:
            progress("load", 1, 1)
    return run_reporting(pipeline, seed, progress, should_cancel, total=lambda pipe: pipe.num_stages,
                         images=[np.clip(images[i], 0, 1) for i in order], evs=[evs[i] for i in order])
