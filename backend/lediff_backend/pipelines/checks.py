"""What every pipeline of ours shares: input checks (diffusers' ``check_inputs`` phase) and the
engines' run with progress, cancel and user-facing errors."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

__all__ = ["check_run_inputs", "run_reporting"]


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


def run_reporting(
    pipe,
    total: Callable[[Any], int],
    seed: int,
    progress: Callable[[str, int, int], None] | None,
    should_cancel: Callable[[], bool] | None,
    **call_kwargs,
):
    """Call ``pipe(**call_kwargs)`` for an engine and return its first output image.

    A CPU ``generator`` seeded with ``seed`` makes the run reproducible on any device. After
    every step the callback reports ``progress(pipe.stage, step, total(pipe))`` and, once
    ``should_cancel()`` is true, sets ``pipe._interrupt``. errors.Cancelled when the run was
    interrupted, errors.OutOfMemory when the GPU ran out of memory.
    """
    import torch

    from .. import errors

    def on_step(p, step: int, t, tensors: dict) -> dict:
        if progress is not None:
            progress(p.stage, step + 1, total(p))
        if should_cancel is not None and should_cancel():
            p._interrupt = True
        return {}

    generator = torch.Generator("cpu").manual_seed(int(seed))
    try:
        out = pipe(generator=generator, callback_on_step_end=on_step, **call_kwargs)
    except torch.cuda.OutOfMemoryError as exc:
        raise errors.OutOfMemory(f"the GPU ran out of memory ({exc}); try a smaller size") from exc
    if out.interrupted:
        raise errors.Cancelled("cancelled")
    return out.images[0]
