"""LF-Diff as a pipeline, and the ``lfdiff`` merge engine (``merge_bracket``).

``LFDiffPipeline`` keeps the diffusers conventions (``from_pretrained`` / ``save_pretrained``,
``generator``, ``num_inference_steps``, ``callback_on_step_end``, an output dataclass,
``interrupt``) without being a ``DiffusionPipeline``: its networks are plain torch modules in
our own folder layout, loaded strictly by ``lfdiff_weights``.

A run merges one bracket of three aligned exposures, darkest first; the middle one is the
reference (the networks align to it):

1. X_i = [L_i, L_i^2.2 / t_i] (``models.lfdiff.network_inputs``), padded with edge pixels to
   a multiple of ``config.multiple`` (16 at the paper's sizes);
2. the condition D (LPENet_DM) at 1/k resolution;
3. the prior: z_T ~ N(0, I) from ``generator``, then S DDIM steps of the denoiser;
4. DHRNet(X, z), the μ-law HDR. Images larger than ``tile_size`` go through it in overlapping,
   feathered tiles (``pipelines.tiling``), each with its part of the prior, so 4K panoramas fit
   a consumer GPU; the prior itself is computed whole (cheap at 1/k resolution), so the tiles
   agree on it;
5. crop, decode the μ-law, and rescale from the darkest exposure's units to the reference's.

Everything runs in float32: the attention's L2 norms sum over all pixels and overflow fp16.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..lfdiff_weights import find_lfdiff_folder, load_lfdiff, save_lfdiff
from ..models.lfdiff import (
    EXPOSURES,
    LFDiffConfig,
    build_networks,
    build_scheduler,
    inverse_mu_law,
    network_inputs,
    reverse_prior,
)
from .checks import RunState, bracket_problem, check_run_inputs, run_reporting, three_exposure_order
from .lediff_engine import resolve_device
from .tiling import map_tiles, tile_starts

__all__ = ["LFDiffPipeline", "LFDiffPipelineOutput", "load_pipeline", "merge_bracket"]

Progress = Callable[[str, int, int], None]
ShouldCancel = Callable[[], bool]
StepCallback = Callable[["LFDiffPipeline", int, Any, dict], dict]


@dataclass
class LFDiffPipelineOutput(BaseOutput):
    """``images``: HDR (1, H, W, 3) float32 scene-linear in the reference's units (its white is 1)
    for "np", (1, 3, H, W) for "pt", the prior (1, N, h, w) for "latent"; None when interrupted."""

    images: np.ndarray | torch.Tensor | None
    interrupted: bool = False


class LFDiffPipeline(RunState):
    """Three aligned LDR exposures -> HDR with LF-Diff's prior diffusion and DHRNet.

    Components: ``condition`` (LPENet_DM), ``denoiser`` (the prior's U-Net), ``dhrnet``, the
    DDIM ``scheduler`` built from ``config``, and optionally ``lpenet`` (training only; kept so
    that a saved folder can be trained further).
    """

    _callback_tensor_inputs = ["prior"]

    def __init__(self, config: LFDiffConfig, condition, denoiser, dhrnet, lpenet=None):
        self.config = config
        self.condition = condition
        self.denoiser = denoiser
        self.dhrnet = dhrnet
        self.lpenet = lpenet
        self.scheduler = build_scheduler(config)
        # DHRNet tiles in pixels (multiples of config.multiple); 1024² keeps a 4K merge small.
        self.tile_size = 1024
        self.tile_overlap = 128

    # -- construction, saving, devices -------------------------------------------------------------

    @classmethod
    def from_config(cls, config: LFDiffConfig) -> "LFDiffPipeline":
        """Fresh random-init networks (the start of training; tiny test models)."""
        return cls(config, **build_networks(config))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "LFDiffPipeline":
        """The pipeline of an LF-Diff folder (``lfdiff_weights`` layout), on the CPU; MissingWeights if wrong."""
        config, networks = load_lfdiff(folder)
        return cls(config, **networks)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        save_lfdiff(folder, self.config, self.components)

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        parts = dict(condition=self.condition, denoiser=self.denoiser, dhrnet=self.dhrnet, lpenet=self.lpenet)
        return {name: module for name, module in parts.items() if module is not None}

    def to(self, device: str | torch.device) -> "LFDiffPipeline":
        for module in self.components.values():
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.dhrnet.parameters()).device

    # -- the run ----------------------------------------------------------------------------------

    def check_inputs(self, images, evs, num_inference_steps, output_type, callback_on_step_end_tensor_inputs):
        problem = bracket_problem(images, evs, "LF-Diff")
        if problem:
            raise ValueError(problem)
        if list(evs) != sorted(evs):
            raise ValueError(f"`images` go darkest first: `evs` must increase, got {list(evs)}")
        check_run_inputs(num_inference_steps, 0.0, output_type, callback_on_step_end_tensor_inputs,
                         self._callback_tensor_inputs)  # LF-Diff has no guidance

    def _pad(self, ldrs: torch.Tensor) -> torch.Tensor:
        """(1, 3, 3, H, W) -> sides padded up to multiples of ``config.multiple`` with edge pixels."""
        m = self.config.multiple
        height, width = ldrs.shape[-2:]
        padded = F.pad(ldrs.flatten(1, 2), (0, -width % m, 0, -height % m), mode="replicate")
        return padded.unflatten(1, ldrs.shape[1:3])

    def _tile_grid(self, height: int, width: int) -> tuple[tuple[int, int], int]:
        """DHRNet's tile (height, width) and the number of tiles, as ``map_tiles`` will cut them."""
        tile = (min(self.tile_size, height), min(self.tile_size, width))
        rows, cols = (
            tile_starts(length, side, self.tile_overlap, wrap=False, align=self.config.multiple)
            for length, side in zip((height, width), tile)
        )
        return tile, len(rows) * len(cols)

    def _after_step(self, callback: StepCallback | None, t, tensors: dict) -> dict:
        """Run the step callback (it may stop the run by setting ``_interrupt``); count the step."""
        out = callback(self, self._step, t, tensors) if callback is not None else None
        self._step += 1
        return out or {}

    def sample_prior(self, inputs: torch.Tensor, steps: int, generator: torch.Generator | None, on_step=None):
        """Steps 2 and 3: the prior (B, N, h, w) of padded inputs X (B, 3, 6, H, W); ``on_step``
        as in ``reverse_prior`` (None when it stops the run)."""
        condition = self.condition(inputs)
        shape = (inputs.shape[0], self.config.prior_channels, *condition.shape[-2:])
        latents = randn_tensor(shape, generator=generator, device=inputs.device, dtype=torch.float32)
        return reverse_prior(
            self.denoiser, self.scheduler, condition, latents * self.scheduler.init_noise_sigma, steps, on_step
        )

    def _reconstruct(self, inputs, prior, tile, callback, tensors: dict) -> torch.Tensor | None:
        """DHRNet over the padded inputs, tile by tile (one callback step each, given ``tensors``);
        None when interrupted."""
        k = self.config.unshuffle

        def run(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            if self.interrupt:  # the remaining tiles are skipped cheaply
                return x.new_zeros(x.shape[0], 3, *x.shape[-2:])
            out = self.dhrnet(x.unflatten(1, (EXPOSURES, -1)), F.avg_pool2d(z, k))
            self._after_step(callback, None, tensors)
            return out

        # The prior enlarged by nearest neighbours follows the tiles; pooling a tile of it
        # (starts are multiples of k) gives back exactly its part of the prior.
        enlarged = F.interpolate(prior, scale_factor=k, mode="nearest")
        out = map_tiles(run, [inputs.flatten(1, 2), enlarged], tile, self.tile_overlap, wrap=False,
                        align=self.config.multiple)
        return None if self.interrupt else out

    @torch.no_grad()
    def __call__(
        self,
        images: Sequence[np.ndarray],
        evs: Sequence[float],
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("prior",),
    ) -> LFDiffPipelineOutput | tuple:
        """Merge three aligned exposures, darkest first, display-encoded (H, W, 3) in [0, 1].

        ``evs``: their exposures in stops (increasing); the result is in the middle exposure's
        units. ``num_inference_steps``: DDIM steps of the prior (default: the trained S).
        ``callback_on_step_end(pipe, step, t, tensors)`` runs after every denoising step
        (``t`` its timestep) and every DHRNet tile (``t`` None); setting ``pipe._interrupt``
        stops the run, which then returns ``images=None, interrupted=True``.
        """
        steps = num_inference_steps or self.config.sampling_steps
        self.check_inputs(images, evs, steps, output_type, callback_on_step_end_tensor_inputs)
        self._interrupt, self._step = False, 0
        interrupted = LFDiffPipelineOutput(images=None, interrupted=True) if return_dict else (None, True)
        device = self.device
        # 1. Inputs, padded
        height, width = np.shape(images[0])[:2]
        ldrs = torch.from_numpy(np.stack(images).astype(np.float32)).permute(0, 3, 1, 2)[None].to(device)
        inputs = network_inputs(self._pad(ldrs), torch.tensor([list(evs)], dtype=torch.float32, device=device))
        tile, tiles = self._tile_grid(*inputs.shape[-2:])
        self._num_timesteps = steps + (0 if output_type == "latent" else tiles)
        # 2. The condition, 3. the prior
        self.stage = "prior"

        def on_step(i: int, t, latents: torch.Tensor) -> torch.Tensor | None:
            out = self._after_step(callback_on_step_end, t, {"prior": latents})
            return None if self.interrupt else out.get("prior", latents)

        prior = self.sample_prior(inputs, steps, generator, on_step)
        if prior is None:
            return interrupted
        if output_type == "latent":
            return LFDiffPipelineOutput(images=prior) if return_dict else (prior, False)
        # 4. DHRNet, 5. back to linear HDR in the reference's units
        self.stage = "reconstruct"
        tonemapped = self._reconstruct(inputs, prior, tile, callback_on_step_end, {"prior": prior})
        if tonemapped is None:
            return interrupted
        hdr = inverse_mu_law(tonemapped[..., :height, :width].float(), self.config.mu) * 2.0 ** (evs[1] - evs[0])
        result = hdr.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32) if output_type == "np" else hdr
        return LFDiffPipelineOutput(images=result) if return_dict else (result, False)


def load_pipeline(model_dir: str | os.PathLike | None, device: str | torch.device = "auto") -> LFDiffPipeline:
    """The pipeline of the LF-Diff folder in ``model_dir`` (a models root or the folder itself), on ``device``."""
    return LFDiffPipeline.from_pretrained(find_lfdiff_folder(model_dir)).to(resolve_device(device))


def merge_bracket(
    images: list[np.ndarray],
    evs: list[float],
    *,
    reference: int,
    model_dir: str | os.PathLike | None,
    device: str = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    pipeline: LFDiffPipeline | None = None,
) -> np.ndarray:
    """The ``lfdiff`` merge engine: three aligned exposures -> (H, W, 3) float32 linear HDR in the
    reference exposure's units (its white is 1.0).

    ``images``: display-encoded float32 (H, W, 3) in [0, 1], in any order, with one EV each in
    ``evs``; ``reference`` indexes them and must be the middle exposure (the networks align to
    it). ``progress(stage, step, total)`` follows the prior's steps ("prior") and DHRNet's tiles
    ("reconstruct"); ``should_cancel()`` is polled after each. ``pipeline``: a warm one
    (``load_pipeline``) instead of loading ``model_dir``.

    Raises BadInput (not three exposures, sizes differ, NaN, equal EVs, another reference),
    MissingWeights, OutOfMemory, Cancelled.
    """
    order = three_exposure_order(images, evs, reference, "LF-Diff")  # the networks align to the middle one
    pipeline = pipeline or load_pipeline(model_dir, device)
    sorted_images, sorted_evs = [images[i] for i in order], [float(evs[i]) for i in order]
    return run_reporting(pipeline, seed, progress, should_cancel, images=sorted_images, evs=sorted_evs)
