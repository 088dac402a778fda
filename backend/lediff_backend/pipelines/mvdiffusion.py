"""MVDiffusion (NeurIPS 2023, "Enabling Holistic Multi-view Image Generation with
Correspondence-Aware Diffusion") as a diffusers pipeline: panorama views denoised jointly.

A frozen Stable Diffusion 2 UNet denoises ``num_views`` perspective views of one scene as one
batch; ``MultiViewCAA`` blocks (``models.caa``) let each view attend to its ring neighbours
through pixel correspondences, so the views agree where they overlap. The official setup:
8 views of 512², FOV 90°, yaw step 45°, DDIM with 50 steps, classifier-free guidance 9 with the
empty prompt as the unconditional one, one prompt per view (or the same for all).

**Outpainting** (the official ``PanoOutpaintGenerator``): with an SD-2 *inpainting* UNet (9 input
channels: noisy latent, mask, masked-image latent) view 0 is given and the others are generated
around it. The mask is 1 where pixels are to be generated; the masked image is the known image
in [-1, 1] with 0 (grey) elsewhere, as in the official code.

Where this differs from the official code, on purpose:

- all noise comes from ``generator``; the masked-image latents use the posterior mode (the
  official code samples it with the global RNG);
- view 0 may be only partly known (a photo narrower than 90° leaves a border to outpaint): the
  mask then covers the unknown part of view 0 too;
- ``num_views == 1`` runs the UNet without CAA (the official code skips CAA for one view as well):
  a plain SD-2 (inpainting) run, used to generate pole views.

Views are returned in the order of ``models.correspondence.ring_yaws`` (view ``i`` at yaw
``-i * yaw_step``); ``hdr.stitch.stitch_views`` blends them into an equirect panorama.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from ..models.caa import MultiViewCAA, ViewGeometry
from ..models.correspondence import RING_FOV_DEG, RING_VIEWS, RING_YAW_STEP_DEG
from .checks import RunState, check_run_inputs

__all__ = ["MVDiffusionPipeline", "MVDiffusionPipelineOutput"]

DEFAULT_GUIDANCE = 9.0  # the official configs' guidance_scale


@dataclass
class MVDiffusionPipelineOutput(BaseOutput):
    """``images``: views (N, H, W, 3) float32 in [0, 1] for "np", (N, 3, H, W) for "pt", or their
    latents (N, 4, h, w) for "latent"; None when interrupted (``interrupted`` is then True)."""

    images: np.ndarray | torch.Tensor | None
    interrupted: bool = False


class MVDiffusionPipeline(RunState, DiffusionPipeline):
    """Text -> panorama views (4-channel SD-2 UNet) or photo -> panorama views (9-channel SD-2
    inpainting UNet), with correspondence-aware attention between neighbouring views."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        caa: MultiViewCAA,
        scheduler: KarrasDiffusionSchedulers,
    ):
        super().__init__()
        latent = vae.config.latent_channels
        if unet.config.in_channels not in (latent, 2 * latent + 1):
            raise ValueError(
                f"the unet has {unet.config.in_channels} input channels; MVDiffusion needs {latent} (text)"
                f" or {2 * latent + 1} (inpainting: latent, mask, masked-image latent)"
            )
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, caa=caa, scheduler=scheduler
        )
        caa.attach(unet)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def inpainting(self) -> bool:
        """True for the outpainting variant (9-channel inpainting UNet)."""
        return self.unet.config.in_channels != self.vae.config.latent_channels

    @property
    def default_view_size(self) -> int:
        """The UNet's native view size in pixels (512 for SD-2-base)."""
        return self.unet.config.sample_size * self.vae_scale_factor

    # -- inputs ---------------------------------------------------------------------------------

    def check_inputs(
        self,
        prompts,
        image,
        known,
        num_views,
        size,
        num_inference_steps,
        guidance_scale,
        output_type,
        callback_on_step_end_tensor_inputs,
    ):
        if num_views < 1:
            raise ValueError(f"`num_views` must be at least 1, got {num_views}")
        if len(prompts) != num_views or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"`prompt` must be one string or a list of {num_views} strings (one per view)")
        if size % self.vae_scale_factor:
            raise ValueError(f"the view size must be a multiple of {self.vae_scale_factor}, got {size}")
        if self.inpainting and image is None:
            raise ValueError("the inpainting (outpainting) variant needs `image`, the known content of view 0")
        if not self.inpainting and image is not None:
            raise ValueError("`image` needs the outpainting variant (a 9-channel inpainting unet)")
        if image is not None and image.shape != (size, size, 3):
            raise ValueError(f"`image` must be ({size}, {size}, 3) like the views, got {tuple(image.shape)}")
        if known is not None and known.shape != (size, size):
            raise ValueError(f"`image_known` must be ({size}, {size}), got {tuple(known.shape)}")
        check_run_inputs(num_inference_steps, guidance_scale, output_type, callback_on_step_end_tensor_inputs,
                         self._callback_tensor_inputs)

    def encode_prompt(self, prompts: list[str], negative_prompt: str, do_cfg: bool) -> torch.Tensor:
        """CLIP hidden states per view: (2N, L, D) as [negatives..., prompts...] with guidance, else (N, L, D)."""
        texts = [negative_prompt] * len(prompts) + prompts if do_cfg else prompts
        ids = self.tokenizer(
            texts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]

    def prepare_condition(self, image: np.ndarray, known: np.ndarray, num_views: int) -> torch.Tensor:
        """(N, 1 + 4, h, w): the mask (1 = generate) and the masked-image latent of every view.

        View 0 holds ``image`` where ``known``; the other views are unknown (grey), so their
        masked-image latent is encoded once and shared.
        """
        device = self._execution_device
        known_t = torch.from_numpy(np.ascontiguousarray(known, np.float32))[None, None]
        pixels = torch.from_numpy(np.ascontiguousarray(image, np.float32)).permute(2, 0, 1)[None] * 2 - 1
        masked = torch.cat([pixels * (known_t >= 0.5), torch.zeros_like(pixels)]).to(device, self.vae.dtype)
        latents = self.vae.encode(masked).latent_dist.mode() * self.vae.config.scaling_factor
        mask = 1.0 - torch.nn.functional.interpolate(known_t, size=latents.shape[-2:]).to(device)
        view0 = torch.cat([mask, latents[:1].float()], dim=1)
        others = torch.cat([torch.ones_like(mask), latents[1:].float()], dim=1)
        return torch.cat([view0, others.expand(num_views - 1, -1, -1, -1)])

    def decode_views(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (N, 4, h, w) -> images (N, 3, H, W) float32 in [0, 1], one view at a time."""
        z = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        images = [self.vae.decode(view[None]).sample.float() for view in z]
        return (torch.cat(images) / 2 + 0.5).clamp(0, 1)

    # -- the call -------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        image: np.ndarray | None = None,
        image_known: np.ndarray | None = None,
        num_views: int = RING_VIEWS,
        fov_deg: float = RING_FOV_DEG,
        yaw_step_deg: float = RING_YAW_STEP_DEG,
        view_size: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = DEFAULT_GUIDANCE,
        negative_prompt: str = "",
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[["MVDiffusionPipeline", int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ) -> MVDiffusionPipelineOutput | tuple:
        """Generate ``num_views`` square views of a panorama.

        ``image`` (outpainting variant only): view 0's known content, (S, S, 3) display-encoded in
        [0, 1]; ``image_known`` (S, S) in [0, 1] says where it is known (default: everywhere).
        ``guidance_scale`` ≤ 1 turns classifier-free guidance off. ``callback_on_step_end(pipe,
        step, t, tensors)`` runs after every step; ``pipe._interrupt = True`` stops the run.
        """
        # 0. Default size: the UNet's native one
        size = view_size or self.default_view_size
        prompts = [prompt] * num_views if isinstance(prompt, str) else list(prompt)
        # 1. Check inputs
        self.check_inputs(
            prompts,
            image,
            image_known,
            num_views,
            size,
            num_inference_steps,
            guidance_scale,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        # 2. Call parameters
        device = self._execution_device
        self._interrupt = False
        do_cfg = guidance_scale > 1.0
        geometry = ViewGeometry.ring(size, num_views, yaw_step_deg, fov_deg)
        accepts = inspect.signature(self.scheduler.step).parameters
        extra_step_kwargs = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in accepts}
        # 3. Encode prompts
        embeds = self.encode_prompt(prompts, negative_prompt, do_cfg).to(self.unet.dtype)
        # 4. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        # 5. Initial noise, one latent per view; the inpainting condition
        f = self.vae_scale_factor
        shape = (num_views, self.vae.config.latent_channels, size // f, size // f)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents * self.scheduler.init_noise_sigma
        condition = None
        if self.inpainting:
            known = np.ones((size, size), np.float32) if image_known is None else image_known
            condition = self.prepare_condition(image, known, num_views)
            condition = torch.cat([condition] * 2) if do_cfg else condition
        # 6. Denoising loop: all views in one batch, CAA between them
        for i, t in enumerate(self.progress_bar(timesteps)):
            if self.interrupt:
                break
            model_input = self.scheduler.scale_model_input(torch.cat([latents] * 2) if do_cfg else latents, t)
            if condition is not None:
                model_input = torch.cat([model_input, condition], dim=1)
            with self.caa.views(geometry):
                noise = self.unet(model_input.to(self.unet.dtype), t, encoder_hidden_states=embeds).sample.float()
            if do_cfg:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise, t, latents, **extra_step_kwargs, return_dict=False)[0]
            if callback_on_step_end is not None:
                out = callback_on_step_end(self, i, t, {"latents": latents})
                latents = out.pop("latents", latents) if out else latents
        if self.interrupt:
            self.maybe_free_model_hooks()
            return MVDiffusionPipelineOutput(images=None, interrupted=True) if return_dict else (None, True)
        # 7. Decode the views
        if output_type == "latent":
            result: torch.Tensor | np.ndarray = latents
        else:
            images = self.decode_views(latents)
            result = images.permute(0, 2, 3, 1).cpu().numpy() if output_type == "np" else images
        self.maybe_free_model_hooks()
        return MVDiffusionPipelineOutput(images=result) if return_dict else (result, False)
