"""LEDiff (CVPR 2025, "Latent Exposure Diffusion for HDR Generation") as a diffusers pipeline.

A Stable Diffusion latent is one exposure of a scene. Fine-tuned conditional denoisers generate
the missing exposures in latent space: the *highlight* denoiser a darker latent, the *shadow*
denoiser a brighter one; each UNet has 8 input channels, the noisy latent followed by the
condition latent. ``LatentFusion`` merges the bracket; the fine-tuned VAE decoder turns the
merged latent into natural-log HDR, which is exponentiated.

Brackets, ordered darkest to brightest as the fusion expects (the official order):

- highlight model only (the official ITM): the input is C+, C0 = D−(C+), C− = D−(C0);
- shadow model only (the official "UN" pipeline): the input is C−, C0 = D+(C−), C+ = D+(C0);
- both (never done by the official code): the input is C0, C− = D−(C0), C+ = D+(C0).

Every case runs two conditional denoising loops. Text -> HDR first generates the input latent
with a base Stable Diffusion UNet, then expands it the same way (the input plays C+, as in the
paper's Sec. 5.1).

Where this differs from the official scripts, on purpose:

- native aspect ratio instead of squashing to 512²: the input is padded to a multiple of the VAE
  factor, denoised in overlapping latent windows of the UNet's native size (averaged every
  step, wrapping in longitude for 2:1 panoramas), and encoded/decoded in overlapping tiles;
- the scheduler is reset (``set_timesteps``) before every loop, so multistep schedulers (PNDM,
  DPM-Solver) do not carry state from one loop into the next;
- guidance ≤ 1 means no classifier-free guidance (the official code then fed a 4-channel latent
  to the 8-channel UNet); guidance is also skipped when prompt and negative prompt are equal;
- only the noisy half of the UNet input goes through ``scheduler.scale_model_input``;
- all noise comes from ``generator``; the VAE and the fusion run in float32 (log-HDR range).
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

from ..models.fusion import LatentFusion
from .checks import RunState, check_run_inputs
from .itm_blend import blend_unclipped
from .tiling import map_tiles

__all__ = ["LEDiffPipeline", "LEDiffPipelineOutput"]

LOG_HDR_LIMIT = 30.0  # |log-HDR| beyond this is numerical garbage, not light (e^30 ~ 1e13)


@dataclass
class LEDiffPipelineOutput(BaseOutput):
    """``images``: HDR (N, H, W, 3) float32 scene-linear for "np", (N, 3, H, W) for "pt", or the
    merged latent for "latent"; None when the run was interrupted (``interrupted`` is then True)."""

    images: np.ndarray | torch.Tensor | None
    interrupted: bool = False


class LEDiffPipeline(RunState, DiffusionPipeline):
    """LDR -> HDR (inverse tone mapping) and text -> HDR with LEDiff's exposure denoisers.

    Components: ``vae`` (SD encoder + LEDiff log-HDR decoder), ``text_encoder``/``tokenizer`` (the
    LEDiff folder's CLIP), ``scheduler``, ``fusion``, and at least one of ``highlight_unet`` /
    ``shadow_unet``; ``base_unet``/``base_text_encoder``/``base_tokenizer`` (a plain SD model)
    only for text -> HDR.
    """

    model_cpu_offload_seq = "base_text_encoder->text_encoder->base_unet->highlight_unet->shadow_unet->vae"
    _optional_components = ["highlight_unet", "shadow_unet", "base_unet", "base_text_encoder", "base_tokenizer"]
    _callback_tensor_inputs = ["latents", "condition"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        scheduler: KarrasDiffusionSchedulers,
        fusion: LatentFusion,
        highlight_unet: UNet2DConditionModel | None = None,
        shadow_unet: UNet2DConditionModel | None = None,
        base_unet: UNet2DConditionModel | None = None,
        base_text_encoder: CLIPTextModel | None = None,
        base_tokenizer: CLIPTokenizer | None = None,
    ):
        super().__init__()
        if highlight_unet is None and shadow_unet is None:
            raise ValueError("LEDiffPipeline needs a highlight_unet, a shadow_unet, or both")
        for name, unet in (("highlight_unet", highlight_unet), ("shadow_unet", shadow_unet)):
            if unet is not None and unet.config.in_channels != 2 * vae.config.latent_channels:
                raise ValueError(
                    f"{name} has {unet.config.in_channels} input channels; LEDiff needs noisy + condition latents"
                )
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
            fusion=fusion,
            highlight_unet=highlight_unet,
            shadow_unet=shadow_unet,
            base_unet=base_unet,
            base_text_encoder=base_text_encoder,
            base_tokenizer=base_tokenizer,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        # VAE tiles in image pixels (multiples of the VAE factor): 512 keeps a 4K decode small.
        self.vae_tile_size = 512
        self.vae_tile_overlap = 64

    def _unets(self) -> list[UNet2DConditionModel]:
        return [u for u in (self.base_unet, self.highlight_unet, self.shadow_unet) if u is not None]

    # -- inputs ---------------------------------------------------------------------------------

    def check_inputs(
        self,
        image,
        latents,
        prompt,
        height,
        width,
        num_inference_steps,
        guidance_scale,
        output_type,
        callback_on_step_end_tensor_inputs,
    ):
        given = sum(x is not None for x in (image, latents))
        if given > 1:
            raise ValueError("pass either `image` (LDR -> HDR) or `latents` (an input latent), not both")
        if given == 0:
            if self.base_unet is None or self.base_text_encoder is None or self.base_tokenizer is None:
                raise ValueError("text -> HDR needs base_unet, base_text_encoder and base_tokenizer")
            if not prompt:
                raise ValueError("text -> HDR needs a `prompt`")
            if height is None or width is None or height % self.vae_scale_factor or width % self.vae_scale_factor:
                raise ValueError(
                    f"`height` and `width` must be multiples of {self.vae_scale_factor}, got {height}x{width}"
                )
        if image is not None and (image.ndim != 4 or image.shape[:2] != (1, 3)):
            raise ValueError(
                f"`image` must be one RGB image, (1, 3, H, W) or (H, W, 3); got shape {tuple(image.shape)}"
            )
        if latents is not None and (latents.ndim != 4 or latents.shape[:2] != (1, self.vae.config.latent_channels)):
            raise ValueError(
                f"`latents` must be (1, {self.vae.config.latent_channels}, h, w); got {tuple(latents.shape)}"
            )
        if not isinstance(prompt, str):
            raise ValueError("`prompt` must be one string")
        check_run_inputs(num_inference_steps, guidance_scale, output_type, callback_on_step_end_tensor_inputs,
                         self._callback_tensor_inputs)

    @staticmethod
    def image_to_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(H, W, 3) array or (3, H, W)/(1, 3, H, W) tensor in [0, 1] -> (1, 3, H, W) float32 tensor."""
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
        image = image.float()
        return image[None] if image.ndim == 3 else image

    def encode_prompt(self, text_encoder, tokenizer, prompt: str, negative_prompt: str, do_cfg: bool) -> torch.Tensor:
        """CLIP hidden states, (2, L, D) as [negative, prompt] with guidance, else (1, L, D)."""
        texts = [negative_prompt, prompt] if do_cfg else [prompt]
        ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return text_encoder(ids.to(text_encoder.device))[0]

    # -- latent space -----------------------------------------------------------------------------

    def _pad(self, image: torch.Tensor, wrap: bool) -> tuple[torch.Tensor, tuple[int, int]]:
        """Pad to multiples of the VAE factor (edge pixels repeated; circular in width for panoramas)."""
        f = self.vae_scale_factor
        height, width = image.shape[-2:]
        pad_h, pad_w = -height % f, -width % f
        if pad_w:
            image = torch.nn.functional.pad(image, (0, pad_w, 0, 0), mode="circular" if wrap else "replicate")
        if pad_h:
            image = torch.nn.functional.pad(image, (0, 0, 0, pad_h), mode="replicate")
        return image, (height, width)

    def encode_image(self, image: torch.Tensor, wrap: bool) -> torch.Tensor:
        """Display-encoded [0, 1] image -> scaled SD latent (the posterior mode, as the official code)."""
        f, tile = self.vae_scale_factor, self.vae_tile_size
        x = image.to(self._execution_device, self.vae.dtype) * 2.0 - 1.0
        encode = lambda t: self.vae.encode(t).latent_dist.mode()  # noqa: E731
        latents = map_tiles(encode, [x], (tile, tile), self.vae_tile_overlap, wrap, scale=1 / f, align=f)
        return latents * self.vae.config.scaling_factor

    def decode_hdr(self, latents: torch.Tensor, wrap: bool) -> torch.Tensor:
        """Merged scaled latent -> scene-linear HDR (N, 3, H, W) float32: exp of the decoded log-HDR."""
        f, tile = self.vae_scale_factor, self.vae_tile_size // self.vae_scale_factor
        z = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        decode = lambda t: self.vae.decode(t).sample  # noqa: E731
        log_hdr = map_tiles(decode, [z], (tile, tile), self.vae_tile_overlap // f, wrap, scale=f)
        return torch.exp(log_hdr.float().clamp(-LOG_HDR_LIMIT, LOG_HDR_LIMIT))

    def _predict_noise(self, unet, latents, condition, t, embeds, guidance_scale, wrap, window_batch) -> torch.Tensor:
        """The UNet's noise prediction over the whole latent, window by window, with guidance."""
        do_cfg = embeds.shape[0] == 2
        scaled = self.scheduler.scale_model_input(latents, t).to(unet.dtype)
        inputs = [scaled] if condition is None else [scaled, condition.to(unet.dtype)]

        def predict(*tiles: torch.Tensor) -> torch.Tensor:
            x = torch.cat(tiles, dim=1)
            n = x.shape[0]
            if do_cfg:
                x = torch.cat([x, x])
            states = embeds.repeat_interleave(n, dim=0)
            noise = unet(x, t, encoder_hidden_states=states, return_dict=False)[0]
            if do_cfg:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            return noise

        window = unet.config.sample_size
        return map_tiles(predict, inputs, (window, window), window // 4, wrap, batch=window_batch).to(latents.dtype)

    def _denoise(
        self,
        stage,
        unet,
        condition,
        embeds,
        shape,
        num_inference_steps,
        guidance_scale,
        generator,
        wrap,
        window_batch,
        extra_step_kwargs,
        callback_on_step_end,
        callback_tensor_inputs,
    ) -> torch.Tensor | None:
        """One full denoising loop from fresh noise; None when interrupted."""
        if self.interrupt:
            return None
        self.stage = stage
        device = self._execution_device
        self.scheduler.set_timesteps(num_inference_steps, device=device)  # also resets multistep state
        latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            if self.interrupt:
                return None
            noise = self._predict_noise(unet, latents, condition, t, embeds, guidance_scale, wrap, window_batch)
            latents = self.scheduler.step(noise, t, latents, **extra_step_kwargs, return_dict=False)[0]
            if callback_on_step_end is not None:
                names = {"latents": latents, "condition": condition}
                out = callback_on_step_end(self, self._step, t, {k: names[k] for k in callback_tensor_inputs})
                latents = out.pop("latents", latents) if out else latents
            self._step += 1
        return None if self.interrupt else latents

    def expand_exposures(
        self, source: torch.Tensor, run: Callable[..., torch.Tensor | None]
    ) -> list[torch.Tensor] | None:
        """The latent bracket, darkest first, from ``source`` (see the module docstring)."""
        if self.highlight_unet is not None and self.shadow_unet is not None:
            darker = run("highlight", self.highlight_unet, source)
            brighter = run("shadow", self.shadow_unet, source)
            return None if darker is None or brighter is None else [darker, source, brighter]
        highlight = self.highlight_unet is not None
        unet, name = (self.highlight_unet, "highlight") if highlight else (self.shadow_unet, "shadow")
        first = run(f"{name} 1/2", unet, source)
        second = run(f"{name} 2/2", unet, first) if first is not None else None
        if second is None:
            return None
        return [second, first, source] if highlight else [source, first, second]

    # -- the call -------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        image: np.ndarray | torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        prompt: str = "",
        negative_prompt: str = "",
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        base_guidance_scale: float = 7.5,
        generator: torch.Generator | None = None,
        panorama: bool = False,
        blend_input: bool = True,
        window_batch: int = 8,
        eta: float = 0.0,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[["LEDiffPipeline", int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ) -> LEDiffPipelineOutput | tuple:
        """Generate an HDR image.

        Modes: ``image`` (LDR -> HDR: an (H, W, 3) array or (1, 3, H, W) tensor, display-encoded in
        [0, 1]), ``latents`` (expand a given scaled SD latent), or neither (text -> HDR from
        ``prompt`` at ``height`` x ``width`` with the base model, guided by ``base_guidance_scale``).
        ``guidance_scale`` guides the exposure denoisers (≤ 1: no guidance). ``panorama`` wraps
        windows and tiles in longitude. With ``image`` and ``blend_input``, unclipped input pixels
        are kept (linearised). ``callback_on_step_end(pipe, step, t, tensors)`` runs after every
        step of every loop (``step`` counts across loops up to ``pipe.num_timesteps``; the loop's
        name is ``pipe.stage``); setting ``pipe._interrupt = True`` stops the run after that step.
        """
        # 0. Input image as a (1, 3, H, W) tensor; its size is the output size
        if image is not None:
            image = self.image_to_tensor(image)
        # 1. Check inputs
        self.check_inputs(
            image,
            latents,
            prompt,
            height,
            width,
            num_inference_steps,
            guidance_scale,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        # 2. Call parameters
        device = self._execution_device
        self._interrupt = False
        self._step = 0
        loops = 2 + (image is None and latents is None)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        self._num_timesteps = loops * len(self.scheduler.timesteps)  # PNDM adds one step
        accepts = inspect.signature(self.scheduler.step).parameters
        extra_step_kwargs = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in accepts}
        do_cfg = guidance_scale > 1.0 and prompt != negative_prompt
        # 3. Encode prompts
        embeds = self.encode_prompt(self.text_encoder, self.tokenizer, prompt, negative_prompt, do_cfg)

        def run(stage, unet, condition, shape=None, states=embeds, scale=guidance_scale):
            return self._denoise(
                stage,
                unet,
                condition,
                states,
                shape or condition.shape,
                num_inference_steps,
                scale,
                generator,
                panorama,
                window_batch,
                extra_step_kwargs,
                callback_on_step_end,
                callback_on_step_end_tensor_inputs,
            )

        # 4. The input latent: encoded image, given latent, or generated from the prompt
        size = None
        if image is not None:
            padded, size = self._pad(image, panorama)
            source = self.encode_image(padded, panorama)
        elif latents is not None:
            source = latents.to(device, torch.float32)
        else:
            base_cfg = base_guidance_scale > 1.0 and prompt != negative_prompt
            base_embeds = self.encode_prompt(
                self.base_text_encoder, self.base_tokenizer, prompt, negative_prompt, base_cfg
            )
            f = self.vae_scale_factor
            shape = (1, self.vae.config.latent_channels, height // f, width // f)
            source = run("generate", self.base_unet, None, shape, base_embeds, base_guidance_scale)
        # 5. Denoising loops: the latent exposure bracket
        bracket = self.expand_exposures(source, run) if source is not None else None
        if bracket is None:
            self.maybe_free_model_hooks()
            return LEDiffPipelineOutput(images=None, interrupted=True) if return_dict else (None, True)
        # 6. Latent fusion
        self.stage = "decode"
        merged = self.fusion(*(b.to(self.fusion.dtype) for b in bracket))
        if output_type == "latent":
            result: torch.Tensor | np.ndarray = merged
        else:
            # 7. HDR decoder (log-HDR -> linear), crop the padding, keep the unclipped input
            hdr = self.decode_hdr(merged, panorama)
            if image is not None:
                hdr = hdr[..., : size[0], : size[1]]
                if blend_input:
                    hdr = blend_unclipped(image.to(hdr.device), hdr, shadows=self.shadow_unet is not None)
            result = hdr.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32) if output_type == "np" else hdr
        self.maybe_free_model_hooks()
        return LEDiffPipelineOutput(images=result) if return_dict else (result, False)
