"""Prompt (or photo) -> 2:1 HDR environment: MVDiffusion views, full sphere, LEDiff expansion.

The stages, each reported to ``progress(stage, step, total)``:

1. ``views``: MVDiffusion denoises the 8 ring views jointly (text; or, with a photo, the
   outpainting variant with the photo as view 0); they are decoded and blended into a 2:1 LDR
   panorama (``hdr.stitch``) at the views' own resolution (2048 wide for 512² views), enlarged
   to the output width after stage 2. A photo is pasted back over its own place.
2. ``poles``: the views see only about ±43° of latitude. Zenith and nadir are completed by
   generated pole views (the outpainting variant's SD-2 inpainting UNet, one 120° view looking
   straight up and one down, conditioned on the reprojected band) when those weights are
   installed, else by the weight-free fill of ``classic.poles``.
3. LEDiff (``highlight``/``shadow`` stages, then the tiled decode): the LDR panorama is
   expanded to HDR by ``lediff_engine.lediff_itm`` with ``panorama=True``, windowed and tiled
   with wrap-around in longitude, so the result is seamless at the wrap.

``load_panorama_pipeline`` loads everything once (cache it: ``PanoramaPipelines`` loads the
outpainting variant on first use); ``lediff_panorama`` runs one job and returns the HDR array.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import errors, weights
from ..classic.poles import fill_poles
from ..hdr.imageio import read_image
from ..hdr.photo_view import paste_photo, photo_fov_deg, photo_to_view
from ..hdr.projection import equirect_to_perspective, perspective_to_equirect, resize_equirect
from ..hdr.stitch import stitch_views
from ..models.caa import MultiViewCAA
from ..models.correspondence import RING_FOV_DEG, ring_yaws
from .checks import call_pipeline, seeded_generator, step_callback
from .lediff import LEDiffPipeline
from .lediff_engine import (  # the loading helpers are shared with LEDiff's engine on purpose
    _load_text,
    _load_unet,
    loading_errors,
    default_dtype,
    lediff_itm,
    load_lediff_pipeline,
    resolve_device,
)
from .mvdiffusion import DEFAULT_GUIDANCE, MVDiffusionPipeline
from .previews import latent_preview

__all__ = [
    "PanoramaPipelines",
    "load_mvdiffusion_pipeline",
    "load_panorama_pipeline",
    "ldr_panorama",
    "lediff_panorama",
]

POLE_FOV_DEG = 120.0  # pole views reach 30° of elevation at their edges: a wide ring of known band
POLE_BLEND_DEG = 3.0  # generated poles fade into the band over this much latitude
PREVIEW_WIDTH = 512  # stitched previews of the views

Progress = Callable[[str, int, int], None]
ShouldCancel = Callable[[], bool]
Preview = Callable[[str, int, np.ndarray], None]


def load_mvdiffusion_pipeline(
    folder: str | os.PathLike, device: str | torch.device = "auto", dtype: torch.dtype | None = None
) -> MVDiffusionPipeline:
    """An ``MVDiffusionPipeline`` from a converted folder (see ``weights.find_mvdiffusion``).

    DDIM with the folder's scheduler config (as the official code), the UNet, text encoder and
    CAA blocks in ``dtype`` (default fp16 on GPU), the VAE in float32.
    """
    from diffusers import AutoencoderKL, DDIMScheduler
    from safetensors.torch import load_file

    folder = Path(folder)
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    with loading_errors(folder / "vae"):
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
    with loading_errors(folder / "scheduler"):
        scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    text_encoder, tokenizer = _load_text(folder, dtype)
    with loading_errors(folder / "caa"):  # strict: every block weight present, nothing else
        caa = MultiViewCAA.from_config(MultiViewCAA.load_config(folder / "caa"))
        state = load_file(folder / "caa" / "diffusion_pytorch_model.safetensors")
        caa.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    pipe = MVDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=_load_unet(folder, dtype),
        caa=caa,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@dataclass
class PanoramaPipelines:
    """Everything a panorama job needs, loaded once; cache one per (model_dir, device).

    ``outpaint`` (photo -> panorama and generated poles) loads on first use when installed.
    """

    text: MVDiffusionPipeline
    lediff: LEDiffPipeline
    model_dir: str | os.PathLike | None = None
    device: str | torch.device = "auto"
    dtype: torch.dtype | None = None
    _outpaint: MVDiffusionPipeline | None = field(default=None, repr=False)

    def outpaint(self, required: bool) -> MVDiffusionPipeline | None:
        """The outpainting variant; None (or MissingWeights when ``required``) if not installed."""
        if self._outpaint is None:
            try:
                folder = weights.find_mvdiffusion(self.model_dir, "mvdiffusion-outpaint")
            except errors.MissingWeights:
                if required:
                    raise
                return None
            self._outpaint = load_mvdiffusion_pipeline(folder, self.device, self.dtype)
        return self._outpaint


def load_panorama_pipeline(
    model_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
    *,
    mvdiffusion_dir: str | os.PathLike | None = None,
    shadow_model_dir: str | os.PathLike | None = None,
) -> PanoramaPipelines:
    """Load MVDiffusion (text variant) and LEDiff from the models root ``model_dir``.

    ``mvdiffusion_dir`` names the converted MVDiffusion folder explicitly (default:
    ``mvdiffusion`` in the root); LEDiff's folders as in ``weights.find_lediff_folders``.
    Raises ``errors.MissingWeights`` saying what to place where.
    """
    device = resolve_device(device)
    text_folder = weights.find_mvdiffusion(mvdiffusion_dir or model_dir)
    return PanoramaPipelines(
        text=load_mvdiffusion_pipeline(text_folder, device, dtype),
        lediff=load_lediff_pipeline(model_dir, shadow_model_dir, device, dtype),
        model_dir=model_dir,
        device=device,
        dtype=dtype,
    )


def _views_preview(latents: torch.Tensor) -> np.ndarray:
    """Approximate RGB of the ring's latents, stitched into a small equirect image."""
    views = [latent_preview(view[None]) for view in latents]
    image, _ = stitch_views(views, ring_yaws(len(views)), RING_FOV_DEG, PREVIEW_WIDTH // 2, PREVIEW_WIDTH)
    return image


def _run_views(pipe: MVDiffusionPipeline, callback, generator, **kwargs) -> np.ndarray:
    return call_pipeline(pipe, generator=generator, callback_on_step_end=callback, output_type="np", **kwargs).images


def _read_photo(image: str | os.PathLike | np.ndarray, fov_deg: float | None) -> tuple[np.ndarray, float]:
    """The photo as display-encoded (H, W, 3) float32 and its horizontal field of view.

    The FOV: given, else from the file's EXIF 35 mm focal length, else 90° (the official demo
    takes any photo as MVDiffusion's own 90° view 0).
    """
    focal = None
    if isinstance(image, (str, os.PathLike)):
        loaded = read_image(image)
        if loaded.is_hdr:
            raise errors.BadInput(f"{image}: photo -> panorama needs an LDR photo (PNG, JPEG, TIFF), not HDR")
        image, focal = loaded.pixels, loaded.focal_length_35mm
    photo = np.asarray(image, np.float32)
    if photo.ndim != 3 or photo.shape[2] != 3 or min(photo.shape[:2]) < 8:
        raise errors.BadInput(f"the photo must be an RGB image of at least 8x8 pixels, got shape {photo.shape}")
    if fov_deg is None:
        fov_deg = photo_fov_deg(photo.shape[1], photo.shape[0], focal) if focal else RING_FOV_DEG
    if not 1.0 <= fov_deg <= 170.0:
        raise errors.BadInput(f"the photo's field of view must be within 1..170°, got {fov_deg:.1f}")
    return np.clip(photo, 0.0, 1.0), float(fov_deg)


def _generated_poles(pipe, band, coverage, prompt, steps, guidance, generator, on_step) -> np.ndarray:
    """Generate the zenith and nadir with an inpainting UNet conditioned on the reprojected band."""
    height, width = coverage.shape
    size = pipe.default_view_size
    alpha = _band_alpha(coverage)[..., None]
    out = band.copy()
    for pitch in (90.0, -90.0):
        view = equirect_to_perspective(band, size, size, POLE_FOV_DEG, 0.0, pitch)
        known = equirect_to_perspective(coverage[..., None], size, size, POLE_FOV_DEG, 0.0, pitch)[..., 0]
        known = (known > 0.999).astype(np.float32)
        pole = _run_views(
            pipe,
            on_step,
            generator,
            prompt=prompt,
            image=view,
            image_known=known,
            num_views=1,
            num_inference_steps=steps,
            guidance_scale=guidance,
        )[0]
        painted, seen = perspective_to_equirect(pole, height, width, POLE_FOV_DEG, 0.0, pitch)
        use = seen > 0
        out[use] = (alpha * band + (1 - alpha) * painted)[use]
    return out


def _band_alpha(coverage: np.ndarray) -> np.ndarray:
    """1 inside the band, falling to 0 over ``POLE_BLEND_DEG`` toward its edge, 0 outside."""
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(coverage > 0.5)  # pixels to the nearest uncovered pixel
    blend_px = max(1.0, POLE_BLEND_DEG / 180.0 * coverage.shape[0])
    return np.clip(depth / blend_px, 0.0, 1.0).astype(np.float32)


def _check_request(prompt: str, image, width: int, poles: str) -> None:
    if not prompt.strip() and image is None:
        raise errors.BadInput("a panorama needs a prompt or a photo")
    if width % 16 or width < 64:
        raise errors.BadInput(f"width must be a multiple of 16 and at least 64, got {width}")
    if poles not in ("auto", "generated", "classic"):
        raise errors.BadInput(f"poles must be auto, generated or classic, got {poles!r}")


def ldr_panorama(
    prompt: str,
    pipeline: PanoramaPipelines,
    *,
    image: str | os.PathLike | np.ndarray | None = None,
    width: int = 2048,
    steps: int = 50,
    seed: int = 0,
    guidance: float = DEFAULT_GUIDANCE,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    preview: Preview | None = None,
    preview_every: int = 0,
    fov_deg: float | None = None,
    poles: str = "auto",
) -> np.ndarray:
    """Stages 1 and 2: the full-sphere LDR panorama, (width/2, width, 3) display-encoded in [0, 1].

    Arguments as ``lediff_panorama``.
    """
    _check_request(prompt, image, width, poles)
    photo, photo_fov = _read_photo(image, fov_deg) if image is not None else (None, None)
    generator = seeded_generator(seed)

    # 1. The ring of views, stitched (a photo is view 0 of the outpainting variant)
    views_pipe = pipeline.outpaint(required=True) if photo is not None else pipeline.text
    condition = {}
    if photo is not None:
        view0, known = photo_to_view(photo, photo_fov, views_pipe.default_view_size, RING_FOV_DEG)
        condition = dict(image=view0, image_known=known)
    views = _run_views(
        views_pipe,
        step_callback(progress, should_cancel, stage="views", preview=preview, preview_every=preview_every,
                      to_preview=_views_preview),
        generator,
        prompt=prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        **condition,
    )
    # The views hold no detail beyond their own resolution: stitch and fill at most at that
    # width (2048 for 512² views), then enlarge; a photo is pasted at the output width.
    work = min(width, 16 * math.ceil(views_pipe.default_view_size * 360 / RING_FOV_DEG / 16))
    band, coverage = stitch_views(list(views), ring_yaws(len(views)), RING_FOV_DEG, work // 2, work)
    # 2. Zenith and nadir
    inpaint = None if poles == "classic" else pipeline.outpaint(required=poles == "generated")
    if inpaint is not None:
        callback = step_callback(progress, should_cancel, stage="poles")
        ldr = _generated_poles(inpaint, band, coverage, prompt, steps, guidance, generator, callback)
    else:
        ldr = fill_poles(band, coverage)
        if progress is not None:
            progress("poles", 1, 1)
    ldr = resize_equirect(ldr, width) if work < width else ldr
    if photo is not None:
        ldr = paste_photo(ldr, photo, photo_fov)
    return np.clip(ldr, 0.0, 1.0)


def lediff_panorama(
    prompt: str,
    *,
    image: str | os.PathLike | np.ndarray | None = None,
    width: int = 2048,
    model_dir: str | os.PathLike | None = None,
    steps: int = 50,
    seed: int = 0,
    guidance: float = DEFAULT_GUIDANCE,
    device: str = "auto",
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    preview: Preview | None = None,
    preview_every: int = 0,
    pipeline: PanoramaPipelines | None = None,
    fov_deg: float | None = None,
    poles: str = "auto",
) -> np.ndarray:
    """Prompt [+ photo] -> (width/2, width, 3) float32 scene-linear 2:1 equirect HDR.

    ``image``: a photo (path, or (H, W, 3) display-encoded array) to outpaint into the panorama;
    its horizontal FOV is ``fov_deg``, else EXIF, else 90°. ``guidance`` guides MVDiffusion
    (official: 9); LEDiff runs unguided, as its official ITM. ``poles``: ``auto`` (generated when
    the outpainting weights are installed, else classic), ``generated`` or ``classic``.
    ``pipeline`` reuses loaded models (then ``model_dir`` and ``device`` are ignored).
    ``progress(stage, step, total)`` per stage (views, poles, highlight/shadow, done);
    ``preview(stage, step, rgb)`` every ``preview_every`` steps; ``should_cancel()`` is polled
    after every step. Failures are ``errors.*``: BadInput, MissingWeights, OutOfMemory, Cancelled.
    """
    _check_request(prompt, image, width, poles)
    if image is not None:  # read and check the photo before loading any model
        image, fov_deg = _read_photo(image, fov_deg)
    pipes = pipeline or load_panorama_pipeline(model_dir, device)
    ldr = ldr_panorama(
        prompt,
        pipes,
        image=image,
        width=width,
        steps=steps,
        seed=seed,
        guidance=guidance,
        progress=progress,
        should_cancel=should_cancel,
        preview=preview,
        preview_every=preview_every,
        fov_deg=fov_deg,
        poles=poles,
    )
    # 3. LEDiff: latent exposure expansion of the whole panorama, wrapping in longitude
    return lediff_itm(
        ldr,
        steps=steps,
        seed=seed,
        panorama=True,
        prompt=prompt,
        progress=progress,
        should_cancel=should_cancel,
        preview=preview,
        preview_every=preview_every,
        pipeline=pipes.lediff,
    )
