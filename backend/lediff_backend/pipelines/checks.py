"""Input checks that every pipeline of ours shares (diffusers' ``check_inputs`` phase)."""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["check_run_inputs"]


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
