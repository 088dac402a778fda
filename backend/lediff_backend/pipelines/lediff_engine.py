"""LEDiff as an engine: load the official folders, run ITM or text -> HDR on numpy images.

The callers (``convert.py``'s engine registry, ``jobs.py``, the ``text2hdr`` command) hand in
and get back plain numpy arrays and map nothing themselves: user-facing failures are already
``errors.*`` (missing weights, bad input, out of memory, cancelled).

- ``resolve_device("auto")``: cuda, then mps, then cpu; ``default_dtype``: fp16 on GPU.
- ``load_lediff_pipeline(model_dir, shadow_model_dir, device, dtype, base_model_dir)``: one
  ``LEDiffPipeline`` from the model folders; cheap to cache by its arguments.
- ``lediff_itm(ldr, ...)`` and ``lediff_text2hdr(prompt, ...)``: one image each, with
  ``progress(stage, step, total)`` and ``should_cancel()`` polled after every denoising step,
  and ``preview(stage, step, rgb)`` every ``preview_every`` steps (``rgb``: an approximate
  display-encoded (h, w, 3) float32 image of the current latent, 1/8 of the output size).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

from .. import errors, weights
from .lediff import LEDiffPipeline
from .checks import run_reporting
from .previews import latent_preview

__all__ = ["resolve_device", "default_dtype", "loading_errors", "load_lediff_pipeline", "lediff_itm", "lediff_text2hdr"]

Progress = Callable[[str, int, int], None]
ShouldCancel = Callable[[], bool]
Preview = Callable[[str, int, np.ndarray], None]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; anything else as torch spells it."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPUs, fp32 on the CPU."""
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


@contextmanager
def loading_errors(folder: os.PathLike) -> Iterator[None]:
    """Turn a corrupt or mismatched checkpoint into MissingWeights naming the folder."""
    try:
        yield
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise errors.MissingWeights(
            f"{folder}: the model files cannot be loaded ({type(exc).__name__}: {exc})"
        ) from exc


def _load_unet(folder, dtype):
    from diffusers import UNet2DConditionModel

    with loading_errors(folder / "unet"):
        return UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype)


def _load_text(folder, dtype):
    from transformers import CLIPTextModel, CLIPTokenizer

    with loading_errors(folder / "text_encoder"):
        return (
            CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype),
            CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        )


def _load_scheduler(folder):
    """The scheduler class and config the folder names (as ``from_pretrained`` would pick)."""
    import diffusers

    path = folder / "scheduler" / "scheduler_config.json"
    with loading_errors(path):
        name = json.loads(path.read_text(encoding="utf-8"))["_class_name"]
        scheduler_class = getattr(diffusers, name, None)
        if scheduler_class is None or not issubclass(scheduler_class, diffusers.SchedulerMixin):
            raise ValueError(f"unknown scheduler {name!r}")
        return scheduler_class.from_pretrained(folder, subfolder="scheduler")


def load_lediff_pipeline(
    model_dir: str | os.PathLike | None,
    shadow_model_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
    *,
    text2hdr: bool = False,
    base_model_dir: str | os.PathLike | None = None,
) -> LEDiffPipeline:
    """A ready ``LEDiffPipeline`` on ``device`` from the official model folders.

    ``model_dir``/``shadow_model_dir`` as in ``weights.find_lediff_folders``; the VAE (log-HDR
    decoder), fusion, text encoder and scheduler come from the highlight folder when present.
    ``text2hdr`` adds the base SD model (``weights.find_base_sd(base_model_dir, model_dir)``). UNets and
    text encoders use ``dtype`` (default fp16 on GPU); the VAE and fusion stay float32.
    """
    from diffusers import AutoencoderKL

    folders = weights.find_lediff_folders(model_dir, shadow_model_dir)
    main = folders.highlight or folders.shadow
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    with loading_errors(main / "vae"):
        vae = AutoencoderKL.from_pretrained(main, subfolder="vae", torch_dtype=torch.float32)
    text_encoder, tokenizer = _load_text(main, dtype)
    base = {}
    if text2hdr:
        base_folder = weights.find_base_sd(base_model_dir, model_dir)
        base_text, base_tokenizer = _load_text(base_folder, dtype)
        base = dict(
            base_unet=_load_unet(base_folder, dtype), base_text_encoder=base_text, base_tokenizer=base_tokenizer
        )
    pipe = LEDiffPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=_load_scheduler(main),
        fusion=weights.load_fusion(main),
        highlight_unet=_load_unet(folders.highlight, dtype) if folders.highlight else None,
        shadow_unet=_load_unet(folders.shadow, dtype) if folders.shadow else None,
        **base,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _run(
    pipe: LEDiffPipeline,
    seed: int,
    progress: Progress | None,
    should_cancel: ShouldCancel | None,
    preview: Preview | None,
    preview_every: int,
    **kwargs,
) -> np.ndarray:
    """``run_reporting`` with latent previews, then a final ``done`` progress report."""
    image = run_reporting(pipe, seed, progress, should_cancel, preview=preview, preview_every=preview_every,
                          to_preview=latent_preview, output_type="np", **kwargs)
    if progress is not None:
        progress("done", pipe.num_timesteps, pipe.num_timesteps)
    return image


def _check_ldr(ldr: np.ndarray) -> np.ndarray:
    ldr = np.asarray(ldr)
    if ldr.ndim != 3 or ldr.shape[2] != 3 or min(ldr.shape[:2]) < 8:
        raise errors.BadInput(f"LEDiff needs an RGB image of at least 8x8 pixels, got shape {ldr.shape}")
    if not np.isfinite(ldr).all():
        raise errors.BadInput("the input image contains NaN or infinite values")
    return np.clip(ldr.astype(np.float32), 0.0, 1.0)


def lediff_itm(
    ldr_encoded: np.ndarray,
    *,
    model_dir: str | os.PathLike | None = None,
    shadow_model_dir: str | os.PathLike | None = None,
    steps: int = 50,
    seed: int = 0,
    guidance: float = 1.0,
    device: str = "auto",
    panorama: bool = False,
    prompt: str = "",
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    preview: Preview | None = None,
    preview_every: int = 0,
    pipeline: LEDiffPipeline | None = None,
) -> np.ndarray:
    """LDR -> HDR: (H, W, 3) display-encoded [0, 1] -> (H, W, 3) float32 scene-linear, same size.

    ``pipeline`` reuses an already loaded pipeline (then the folder arguments are ignored).
    ``panorama`` treats the image as an equirectangular 360° panorama (wraps in longitude).
    """
    ldr = _check_ldr(ldr_encoded)
    pipe = pipeline or load_lediff_pipeline(model_dir, shadow_model_dir, device)
    return _run(
        pipe,
        seed,
        progress,
        should_cancel,
        preview,
        preview_every,
        image=ldr,
        prompt=prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        panorama=panorama,
    )


def lediff_text2hdr(
    prompt: str,
    *,
    width: int,
    height: int,
    model_dir: str | os.PathLike | None = None,
    base_model_dir: str | os.PathLike | None = None,
    shadow_model_dir: str | os.PathLike | None = None,
    steps: int = 50,
    seed: int = 0,
    guidance: float = 7.5,
    device: str = "auto",
    panorama: bool = False,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    preview: Preview | None = None,
    preview_every: int = 0,
    pipeline: LEDiffPipeline | None = None,
) -> np.ndarray:
    """Text -> HDR: (height, width, 3) float32 scene-linear. Sizes must be multiples of 8.

    ``guidance`` guides the base model and, with the prompt, the exposure denoisers (as the
    official HDR generation does). ``base_model_dir`` defaults to ``sd-base`` in the models root.
    """
    if not prompt.strip():
        raise errors.BadInput("text2hdr needs a prompt")
    if width % 8 or height % 8 or min(width, height) < 64:
        raise errors.BadInput(f"width and height must be multiples of 8 and at least 64, got {width}x{height}")
    pipe = pipeline or load_lediff_pipeline(
        model_dir, shadow_model_dir, device, text2hdr=True, base_model_dir=base_model_dir
    )
    return _run(
        pipe,
        seed,
        progress,
        should_cancel,
        preview,
        preview_every,
        prompt=prompt,
        width=width,
        height=height,
        num_inference_steps=steps,
        base_guidance_scale=guidance,
        guidance_scale=guidance,
        panorama=panorama,
    )
