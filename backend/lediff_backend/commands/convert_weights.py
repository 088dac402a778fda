"""``lediff convert-weights mvdiffusion pano.ckpt OUT_DIR``: an official checkpoint -> safetensors folder.

MVDiffusion publishes PyTorch Lightning checkpoints (``pano.ckpt``, ``pano_outpaint.ckpt``);
this converts one, once, into the diffusers SD-2 folder plus ``caa/`` that the panorama
pipeline loads (see ``mvdiffusion_weights``). Configs, tokenizer and scheduler come from the
SD-2 base folder (``--base``, else ``sd2-base`` / ``sd2-inpainting`` in the models root or the
Hugging Face cache). Unknown or missing keys are refused, naming them.
"""

from __future__ import annotations

import argparse

from ..cli import SUCCESS
from ..weights import MODELS
from ._console import StderrProgress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    variants = sorted(name for name, spec in MODELS.items() if spec.kind == "mvdiffusion")
    parser.add_argument("model", choices=variants, help="which checkpoint: pano.ckpt or pano_outpaint.ckpt")
    parser.add_argument("checkpoint", help="the official checkpoint file")
    parser.add_argument("out_dir", help="folder to create, e.g. <models root>/mvdiffusion")
    parser.add_argument("--base", help="SD-2 base (or inpainting) diffusers folder for configs and tokenizer")
    parser.add_argument("--model-dir", help="models root to look for the SD-2 folder (default: $LEDIFF_MODELS)")


def run(args: argparse.Namespace) -> int:
    from ..mvdiffusion_weights import convert_mvdiffusion

    folder = convert_mvdiffusion(
        args.checkpoint,
        args.out_dir,
        variant=args.model,
        base_dir=args.base,
        model_dir=args.model_dir,
        progress=StderrProgress("convert-weights"),
    )
    print(folder)
    return SUCCESS
