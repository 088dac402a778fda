"""What every pipeline of ours shares: input checks (diffusers' ``check_inputs`` phase) and the
engines' run with progress, cancel and user-facing errors."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["RunState", "check_run_inputs", "bracket_problem", "three_exposure_order", "step_callback", "call_pipeline",
           "seeded_generator", "run_reporting"]

Progress = Callable[[str, int, int], None]


class RunState:
    """What a run shows its step callbacks, as diffusers pipelines do: ``stage`` (the part that
    runs now), ``interrupt`` (a callback sets ``_interrupt`` to stop after this step) and
    ``num_timesteps`` (the steps of the whole run). Each ``__call__`` resets them."""

    stage = ""
    _interrupt = False
    _num_timesteps = 0
    _step = 0

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps


def check_run_inputs(
    num_inference_steps: int,
    guidance_scale: float,
    output_type: str,
    callback_on_step_end_tensor_inputs: Sequence[str],
    allowed_callback_tensors: Sequence[str],
) -> None:
    """ValueError for a bad step count, guidance, output type or callback tensor name."""
    if num_inference_steps < 1:
        raise ValueError(f"`num_inference_steps` must be at least 1, got {num_inference_steps}")
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"`guidance_scale` must be a finite number >= 0, got {guidance_scale}")
    if output_type not in ("np", "pt", "latent"):
        raise ValueError(f"`output_type` must be 'np', 'pt' or 'latent', got {output_type!r}")
    unknown = [k for k in callback_on_step_end_tensor_inputs if k not in allowed_callback_tensors]
    if unknown:
        raise ValueError(f"`callback_on_step_end_tensor_inputs` must be in {list(allowed_callback_tensors)}, got {unknown}")


def bracket_problem(images: Sequence[np.ndarray], evs: Sequence[float], engine: str) -> str | None:
    """Why ``images`` and ``evs`` are not the three-exposure bracket the merge models take, or None."""
    if len(images) != 3:
        return f"{engine} merges exactly three exposures (darkest, reference, brightest), got {len(images)}"
    if len(evs) != len(images):
        return f"{len(evs)} EVs for {len(images)} images: give one EV per image"
    shapes = [tuple(np.shape(image)) for image in images]
    if len(set(shapes)) > 1:
        return f"the exposures differ in size: {', '.join('x'.join(map(str, s)) for s in shapes)}"
    if len(shapes[0]) != 3 or shapes[0][2] != 3 or min(shapes[0][:2]) < 1:
        return f"{engine} needs RGB images (H, W, 3), got shape {shapes[0]}"
    if not all(np.isfinite(image).all() for image in images) or not np.isfinite(evs).all():
        return "the bracket contains NaN or infinite values"
    if len(set(evs)) < len(evs):
        return f"the exposures need three different EVs, got {list(evs)}"
    return None


def three_exposure_order(images: Sequence[np.ndarray], evs: Sequence[float], reference: int, engine: str) -> list[int]:
    """Indices (darkest, reference, brightest) of a merge engine's bracket; errors.BadInput when
    it is not one (``bracket_problem``) or ``reference`` is not its middle exposure."""
    from .. import errors

    evs = [float(ev) for ev in evs]
    problem = bracket_problem(images, evs, engine)
    if problem:
        raise errors.BadInput(problem)
    order = sorted(range(3), key=evs.__getitem__)
    if reference != order[1]:
        raise errors.BadInput(
            f"{engine} needs the reference (image {reference}, EV {evs[reference]:g}) between a darker and a"
            f" brighter exposure: the middle exposure is image {order[1]} (EV {evs[order[1]]:g})")
    return order


def step_callback(
    progress: Progress | None,
    should_cancel: Callable[[], bool] | None,
    *,
    stage: str | None = None,
    total: Callable[[Any], int] = lambda pipe: pipe.num_timesteps,
    preview: Callable[[str, int, Any], None] | None = None,
    preview_every: int = 0,
    to_preview: Callable[[Any], Any] | None = None,
) -> Callable:
    """A ``callback_on_step_end`` for our engines.

    After every step it reports ``progress(stage, steps done, total(pipe))`` (``stage``
    defaults to ``pipe.stage``), every ``preview_every`` steps sends
    ``preview(stage, steps done, to_preview(latents))``, and once ``should_cancel()`` is true
    sets ``pipe._interrupt`` so that the run stops after this step.
    """

    def on_step(pipe, step: int, timestep, tensors: dict) -> dict:
        done, name = step + 1, stage or pipe.stage
        if progress is not None:
            progress(name, done, total(pipe))
        if preview is not None and preview_every > 0 and done % preview_every == 0:
            preview(name, done, to_preview(tensors["latents"]))
        if should_cancel is not None and should_cancel():
            pipe._interrupt = True
        return {}

    return on_step


def call_pipeline(pipe, **call_kwargs):
    """``pipe(**call_kwargs)``; errors.OutOfMemory when the GPU ran out of memory,
    errors.Cancelled when a step callback interrupted the run."""
    import torch

    from .. import errors

    try:
        out = pipe(**call_kwargs)
    except torch.cuda.OutOfMemoryError as exc:
        raise errors.OutOfMemory(f"the GPU ran out of memory ({exc}); try a smaller size") from exc
    if out.interrupted:
        raise errors.Cancelled("cancelled")
    return out


def seeded_generator(seed: int):
    """A CPU generator: the same seed gives the same noise on every device."""
    import torch

    return torch.Generator("cpu").manual_seed(int(seed))


def run_reporting(
    pipe,
    seed: int,
    progress: Progress | None,
    should_cancel: Callable[[], bool] | None,
    *,
    total: Callable[[Any], int] = lambda pipe: pipe.num_timesteps,
    preview: Callable[[str, int, Any], None] | None = None,
    preview_every: int = 0,
    to_preview: Callable[[Any], Any] | None = None,
    **call_kwargs,
):
    """An engine's seeded run of ``pipe(**call_kwargs)`` with ``step_callback``'s progress,
    previews and cancel (``call_pipeline``'s errors); returns its first output image."""
    callback = step_callback(progress, should_cancel, total=total, preview=preview, preview_every=preview_every,
                             to_preview=to_preview)
    out = call_pipeline(pipe, generator=seeded_generator(seed), callback_on_step_end=callback, **call_kwargs)
    return out.images[0]
