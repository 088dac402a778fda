"""Random-init model folders in the official layouts: tiny for tests, SD-1.5-sized for benchmarks.

This is diffusers' ``get_dummy_components`` written to disk: the folders load through exactly
the code that loads the official checkpoints (``weights.find_lediff_folders``,
``pipelines.lediff_engine.load_lediff_pipeline``), so tests exercise the real loading path
without network or downloads. Everything is seeded; a tiny root is written in about a second.

- ``write_tiny_models(root)``: ``lediff-highlight``, ``lediff-shadow`` (8-channel unet, VAE,
  CLIP text encoder + tokenizer, scheduler, ``vae/merge_model.pth``), ``sd-base``
  (4-channel unet), and the converted MVDiffusion layouts ``mvdiffusion`` (SD-2-shaped: linear
  attention projections, GELU text encoder; 4-channel unet) and ``mvdiffusion-outpaint``
  (9-channel inpainting unet), each with ``caa/`` blocks whose output projections are small
  random values (so the views really interact); ``sd21-base`` (SD-2-shaped) and ``gmodiff``
  on it (``tiny_gmodiff``); named as in ``weights.MODELS``; and ``lfdiff``, LF-Diff in its
  own layout (``tiny_lfdiff``).
- ``build_components(shapes, unet_in_channels, seed)``: the same modules in memory, used by
  ``bench/gpu.py`` with ``SD15`` shapes.

The tokenizer is a real ``CLIPTokenizer`` loaded from a ``vocab.json``/``merges.txt`` pair that
this module writes itself (byte-level alphabet plus merges for a few words), so it works offline.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .tiny_gmodiff import write_tiny_gmodiff
from .tiny_lfdiff import write_tiny_lfdiff

__all__ = [
    "ModelShapes",
    "TINY",
    "SD15",
    "TINY_SD2",
    "SD2",
    "write_tokenizer",
    "build_components",
    "write_tiny_models",
    "ensure_tiny_models",
]

# Bump when the folders' contents change, so cached roots are rewritten.
TINY_VERSION = 5
_MARKER = "tiny-models.json"
_SCALING_FACTOR = 0.18215
_MAX_TOKENS = 77
_WORDS = ("a", "the", "sun", "sunset", "sky", "beach", "room", "light", "window", "night", "street", "hdr")


@dataclass(frozen=True)
class ModelShapes:
    """Constructor arguments of the three networks; unet in_channels is set per model."""

    unet: dict = field(default_factory=dict)
    vae: dict = field(default_factory=dict)
    text_encoder: dict = field(default_factory=dict)


TINY = ModelShapes(
    unet=dict(
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=4,
        sample_size=8,  # the latent window: 8 latents = 64 pixels
    ),
    vae=dict(
        block_out_channels=(8, 8, 8, 8),  # four blocks: the official 8x downsampling
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=64,
    ),
    text_encoder=dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, projection_dim=32
    ),
)

# Stable Diffusion 2's differences from 1.x, at tiny size (MVDiffusion's base model).
TINY_SD2 = ModelShapes(
    unet=dict(TINY.unet, use_linear_projection=True, attention_head_dim=(2, 4)),
    vae=TINY.vae,
    text_encoder=dict(TINY.text_encoder, hidden_act="gelu"),
)

# Stable Diffusion 1.5's shapes (the official LEDiff models are fine-tuned from SD-class models).
SD15 = ModelShapes(
    unet=dict(
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
        sample_size=64,
    ),
    vae=dict(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    ),
    text_encoder=dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        projection_dim=768,
    ),
)

# Stable Diffusion 2 base's shapes (MVDiffusion's base model, 512² views).
SD2 = ModelShapes(
    unet=dict(SD15.unet, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True),
    vae=SD15.vae,
    text_encoder=dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=23,
        num_attention_heads=16,
        projection_dim=512,
        hidden_act="gelu",
    ),
)

# Stable Diffusion 1.5's scheduler_config.json (PNDM, a multistep scheduler with state).
_SCHEDULER_CONFIG = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: one printable character per byte value."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    extra = (b for b in range(256) if b not in printable)
    chars = {b: chr(b) for b in printable}
    chars.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return [chars[b] for b in range(256)]


def write_tokenizer(folder: Path, words: tuple[str, ...] = _WORDS) -> int:
    """Write a CLIP tokenizer (vocab.json, merges.txt, configs) to ``folder``; return its vocab size.

    The vocabulary is the byte-level alphabet (with and without the ``</w>`` end-of-word mark),
    one left-to-right merge chain per word in ``words``, then CLIP's two special tokens.
    """
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merge = f"{pieces[0]} {pieces[1]}"
            pieces[:2] = [pieces[0] + pieces[1]]
            if merge not in merges:
                merges.append(merge)
                vocab.append(pieces[0])
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    ids = {token: i for i, token in enumerate(dict.fromkeys(vocab))}
    (folder / "vocab.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    specials = dict(
        bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    (folder / "special_tokens_map.json").write_text(json.dumps(specials), encoding="utf-8")
    config = dict(specials, tokenizer_class="CLIPTokenizer", model_max_length=_MAX_TOKENS, do_lower_case=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return len(ids)


def build_components(shapes: ModelShapes, unet_in_channels: int, seed: int, vocab_size: int = 49408) -> dict:
    """Seeded random-init ``unet``, ``vae``, ``text_encoder`` and ``scheduler`` (no tokenizer)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_config = dict(vocab_size=vocab_size, max_position_embeddings=_MAX_TOKENS, **shapes.text_encoder)
    text_config["bos_token_id"], text_config["eos_token_id"] = (
        text_config["vocab_size"] - 2,
        text_config["vocab_size"] - 1,
    )
    text_config["pad_token_id"] = text_config["eos_token_id"]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(in_channels=unet_in_channels, out_channels=4, **shapes.unet)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, scaling_factor=_SCALING_FACTOR, **shapes.vae)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, scheduler=PNDMScheduler(**_SCHEDULER_CONFIG))


def _random_fusion(seed: int):
    """A fusion module with small random weights, so tests see more than the bracket mean."""
    from ..models.fusion import LatentFusion

    fusion = LatentFusion()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        fusion.weight_conv.weight.normal_(0.0, 0.5, generator=generator)
        fusion.weight_conv.bias.normal_(0.0, 0.5, generator=generator)
    return fusion


def _write_model(folder: Path, shapes: ModelShapes, unet_in_channels: int, seed: int, with_fusion: bool) -> Path:
    """Write one diffusers Stable Diffusion folder (official layout) and, for LEDiff, its fusion weights."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    vocab_size = write_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    parts = build_components(shapes, unet_in_channels, seed, vocab_size=vocab_size)
    pipe = StableDiffusionPipeline(
        **parts, tokenizer=tokenizer, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder)
    # save_pretrained writes the tokenizer in transformers' own format; restore the official files.
    shutil.rmtree(folder / "tokenizer")
    write_tokenizer(folder / "tokenizer")
    if with_fusion:
        torch.save(_random_fusion(seed + 3).state_dict(), folder / "vae" / "merge_model.pth")
    return folder


def _write_caa(folder: Path, seed: int) -> None:
    """``caa/`` for the unet in ``folder``: seeded blocks with small random output projections."""
    from diffusers import UNet2DConditionModel

    from ..models.caa import MultiViewCAA

    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    torch.manual_seed(seed)
    caa = MultiViewCAA.for_unet(unet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in caa.named_parameters():
            if "to_out" in name or "ff.net.2" in name:
                parameter.normal_(0.0, 0.1, generator=generator)
    caa.save_pretrained(folder / "caa")


def _write_sd2(folder: Path, unet_in_channels: int, seed: int) -> Path:
    _write_model(folder, TINY_SD2, unet_in_channels, seed, with_fusion=False)
    # SD-2's scheduler config says clip_sample false, which MVDiffusion's DDIM and GMODiff's DDPM inherit.
    scheduler = folder / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps(dict(json.loads(scheduler.read_text()), clip_sample=False), indent=2))
    return folder


def _write_mvdiffusion(folder: Path, unet_in_channels: int, seed: int) -> Path:
    _write_sd2(folder, unet_in_channels, seed)
    _write_caa(folder, seed + 5)
    return folder


def write_tiny_models(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write a complete models root of tiny random-init models; return name -> folder."""
    root = Path(root)
    folders = {
        "lediff-highlight": _write_model(root / "lediff-highlight", TINY, 8, seed, with_fusion=True),
        "lediff-shadow": _write_model(root / "lediff-shadow", TINY, 8, seed + 10, with_fusion=True),
        "sd-base": _write_model(root / "sd-base", TINY, 4, seed + 20, with_fusion=False),
        "mvdiffusion": _write_mvdiffusion(root / "mvdiffusion", 4, seed + 30),
        "mvdiffusion-outpaint": _write_mvdiffusion(root / "mvdiffusion-outpaint", 9, seed + 40),
        "sd21-base": _write_sd2(root / "sd21-base", 4, seed + 50),
        "gmodiff": write_tiny_gmodiff(root / "gmodiff", seed + 60),
        "lfdiff": write_tiny_lfdiff(root / "lfdiff", seed + 70),
    }
    (root / _MARKER).write_text(json.dumps(dict(version=TINY_VERSION, seed=seed)))
    return folders


def ensure_tiny_models(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """``write_tiny_models`` unless ``root`` already holds this version written with this seed."""
    root = Path(root)
    marker = root / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == dict(version=TINY_VERSION, seed=seed):
        names = ("lediff-highlight", "lediff-shadow", "sd-base", "mvdiffusion", "mvdiffusion-outpaint", "sd21-base",
                 "gmodiff", "lfdiff")
        return {name: root / name for name in names}
    return write_tiny_models(root, seed)
