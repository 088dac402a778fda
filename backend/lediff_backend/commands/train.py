"""``lediff train RECIPE --data DIR --out DIR``: train LEDiff, LF-Diff or GMODiff on HDR images.

``decoder`` fine-tunes the latent fusion and the log-HDR decoder; ``highlight`` / ``shadow``
the conditional denoisers. ``--model`` is the starting point: a Stable Diffusion folder or a
LEDiff folder (default: the installed LEDiff model of that kind, else the base SD model).
``lfdiff-stage1`` trains LF-Diff's prior extractor and reconstruction network (from scratch, or
from ``--model``, an LF-Diff folder), ``lfdiff-stage2`` its prior diffusion (``--model``: the
stage-one export); see ``training/lfdiff.py``. ``gmodiff-dareg`` trains GMODiff's regression
network (from scratch, or from ``--model``, a GMODiff folder), ``gmodiff`` its diffusion stage
on Stable Diffusion 2.1 base (``--model``: the regression export); see ``training/gmodiff.py``.
The trained model lands in ``OUT/export`` in its folder layout (``--model-dir OUT/export``).
Several GPUs or nodes: ``accelerate launch --config_file CONFIG -m lediff_backend.cli train ...``
(see ``training/configs/accelerate_multi_gpu.yaml``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import weights
from ..cli import SUCCESS
from ..training.config import RECIPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", choices=sorted(RECIPES), help="what to fine-tune")
    parser.add_argument("--data", required=True, help="folder of HDR images (.exr, .hdr), searched recursively")
    parser.add_argument("--out", required=True, help="run folder: loss log, checkpoints, validation, export/")
    parser.add_argument(
        "--model",
        help="starting weights: an SD or LEDiff folder (default: the installed LEDiff model of that kind,"
        " else the base SD model); for lfdiff-*, an LF-Diff folder (stage 1 default: random weights);"
        " for gmodiff-*, a GMODiff folder (gmodiff-dareg default: random weights)",
    )
    parser.add_argument("--decoder", help="LEDiff folder whose HDR decoder and fusion the denoiser export uses")
    parser.add_argument("--model-dir", help="models root for the default --model (default: $LEDIFF_MODELS)")
    parser.add_argument("--config", help="JSON file overriding the recipe's defaults (training/configs/)")
    parser.add_argument("--steps", type=int, help="total optimisation steps (overrides the config)")
    parser.add_argument("--cache-dir", help="cache the latents here (overrides the config's latent_cache)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")


def _default_model(recipe: str, model_dir: str | None) -> Path:
    installed = weights.models_root(model_dir) / ("lediff-shadow" if recipe == "shadow" else "lediff-highlight")
    if installed.exists():
        return weights.check_lediff_folder(installed, installed.name)
    return weights.find_base_sd(model_dir=model_dir)


def _report(recipe: str):
    def report(stage: str, step: int, total: int, values: dict) -> None:
        losses = " ".join(f"{k} {v:.4g}" for k, v in values.items() if k not in ("step", "lr", "seconds"))
        seconds = f" ({values['seconds']:.0f} s)" if "seconds" in values else ""
        print(f"train {recipe}: {stage} {step}/{total} {losses}{seconds}", file=sys.stderr, flush=True)

    return report


def _lediff_recipe(args: argparse.Namespace, options: dict):
    """The LEDiff recipe of ``args``, from ``--model`` or the default model."""
    model = Path(args.model) if args.model else _default_model(args.recipe, args.model_dir)
    if args.recipe != "decoder" and not args.decoder and weights.fusion_weights_path(model) is None:
        print(
            f"train {args.recipe}: note: {model} is plain Stable Diffusion, so the export decodes LDR;"
            " pass --decoder with a trained decoder (lediff train decoder) for HDR output",
            file=sys.stderr,
        )
    if args.recipe == "decoder":
        from ..training.decoder import DecoderRecipe

        return DecoderRecipe(model, options)
    from ..training.denoisers import DenoiserRecipe

    return DenoiserRecipe(args.recipe, model, options, decoder=args.decoder)


def run(args: argparse.Namespace) -> int:
    from ..training.config import load_config
    from ..training.loop import train

    config, options = load_config(args.recipe, args.config, steps=args.steps, latent_cache=args.cache_dir)
    if args.recipe.startswith("lfdiff-"):
        from ..training.lfdiff import LFDiffRecipe

        recipe = LFDiffRecipe(args.recipe, args.model, options)
    elif args.recipe.startswith("gmodiff"):
        from ..training.gmodiff import gmodiff_recipe

        recipe = gmodiff_recipe(args.recipe, args.model, args.model_dir, options)
    else:
        recipe = _lediff_recipe(args, options)
    result = train(recipe, config, args.data, args.out, resume=args.resume, report=_report(args.recipe))
    if result.main_process:
        print(result.export)
    return SUCCESS
