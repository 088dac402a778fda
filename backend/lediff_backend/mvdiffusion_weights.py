"""MVDiffusion's official checkpoints -> a diffusers SD-2 folder plus ``caa/`` (safetensors).

``pano.ckpt`` and ``pano_outpaint.ckpt`` are PyTorch Lightning checkpoints of the official
``PanoGenerator`` / ``PanoOutpaintGenerator``; their ``state_dict`` holds every weight of the
module, named as in the official code (diffusers 0.16.1, transformers 4.28.1):

- ``mv_base_model.unet.*``: the SD-2 (inpainting) ``UNet2DConditionModel``, frozen in training;
- ``mv_base_model.cp_blocks_encoder.<i>.*``, ``mv_base_model.cp_blocks_mid.*``,
  ``mv_base_model.cp_blocks_decoder.<i>.*``: the CAA blocks (the trained part), each
  ``transformer.{norm1,norm2,attn1.to_q,attn1.to_k,attn1.to_v,attn1.to_out,ff.net.0.proj,ff.net.2}``
  and ``pe.freq_bands`` (constants of the positional encoding: checked against
  ``PositionalEncoding.frequencies``, not stored);
- ``vae.*``: the ``AutoencoderKL``; its mid-block attention still has diffusers 0.16's names
  ``query``/``key``/``value``/``proj_attn`` (today ``to_q``/``to_k``/``to_v``/``to_out.0``);
- ``text_encoder.*``: the ``CLIPTextModel`` (``text_model.embeddings.position_ids`` is a buffer
  that newer transformers no longer save; it is dropped).

``convert_mvdiffusion`` maps every key, checks the result against modules built from the SD-2
base folder's configs (every expected key present, every shape equal, nothing left over) and
writes ``unet/``, ``vae/``, ``text_encoder/`` and ``caa/`` as safetensors with their configs,
plus the base folder's ``tokenizer/``, ``scheduler/`` and ``model_index.json``. Anything
unexpected is refused with ``errors.MissingWeights`` naming the keys. The checkpoint is read
with ``torch.load(weights_only=True)``; Lightning bookkeeping that this refuses (classes in the
hyper-parameters or callback states) is read as inert stand-ins, so no pickled code ever runs.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Callable

import torch

from . import weights
from .errors import MissingWeights

__all__ = ["read_checkpoint", "map_official_keys", "convert_mvdiffusion", "CheckpointKeyError"]

# (official key prefix, our component, the part of the prefix that our key names drop)
_PREFIXES = (
    ("mv_base_model.unet.", "unet", "mv_base_model.unet."),
    ("mv_base_model.cp_blocks_", "caa", "mv_base_model."),
    ("vae.", "vae", "vae."),
    ("text_encoder.", "text_encoder", "text_encoder."),
)
_VAE_ATTENTION = re.compile(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")
_VAE_RENAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_DROPPED = {"text_encoder.text_model.embeddings.position_ids"}  # saved by transformers < 4.31 only
_FREQ_BANDS = re.compile(r"^mv_base_model\.cp_blocks_\w+(\.\d+)?\.pe\.freq_bands$")
_COMPONENTS = ("unet", "vae", "text_encoder", "caa")
_LISTED = 12  # keys named per problem in an error message


class CheckpointKeyError(MissingWeights):
    """The checkpoint's keys do not match the official MVDiffusion model."""


class _StandIn:
    """Takes the place of a class a checkpoint names but we do not trust; keeps nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _torch_load(path: Path, stand_ins: dict[str, type]) -> object:
    with torch.serialization.safe_globals([(cls, name) for name, cls in stand_ins.items()]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_with_stand_ins(path: Path) -> object:
    """``torch.load(weights_only=True)`` with each unsafe global replaced by an inert stand-in.

    A stand-in that the pickle then fills like a dict or a list becomes a plain dict or list.
    """
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    stand_ins: dict[str, type] = {name: type(f"StandIn{i}", (_StandIn,), {}) for i, name in enumerate(names)}
    for _ in range(len(names) + 1):
        try:
            return _torch_load(path, stand_ins)
        except pickle.UnpicklingError as exc:
            message = str(exc)
            culprit = next((n for n, c in stand_ins.items() if f".{c.__name__}'" in message), None)
            container = dict if "SETITEM" in message else list if "lists" in message else None
            if culprit is None or container is None:
                raise
            stand_ins[culprit] = container
    raise pickle.UnpicklingError("the checkpoint's structure could not be read")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The flat tensor ``state_dict`` of a Lightning checkpoint (or of a bare state dict file)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeights(f"{path}: no such checkpoint file")
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            loaded = _load_with_stand_ins(path)
    except Exception as exc:  # truncated, not a torch file, or a pickle we will not read
        raise MissingWeights(f"{path}: cannot be read as a checkpoint ({type(exc).__name__}: {exc})") from exc
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MissingWeights(f"{path}: holds no state dict of tensors (a Lightning checkpoint has 'state_dict')")
    return state


def _target_name(key: str) -> tuple[str, str] | None:
    """(component, key inside it) of an official key, or None when it belongs to nothing."""
    for prefix, component, dropped in _PREFIXES:
        if key.startswith(prefix):
            inner = key[len(dropped) :]
            if component == "vae" and (match := _VAE_ATTENTION.match(inner)):
                inner = f"{match[1]}{_VAE_RENAMES[match[2]]}.{match[3]}"
            return component, inner
    return None


def map_official_keys(
    state: dict[str, torch.Tensor], expected: dict[str, dict[str, tuple[int, ...]]]
) -> dict[str, dict[str, torch.Tensor]]:
    """Split an official state dict into our components; refuse unknown, missing or misshapen keys.

    ``expected``: component -> {key: shape} of the modules the weights must fill.
    """
    from .models.caa import PositionalEncoding

    mapped: dict[str, dict[str, torch.Tensor]] = {c: {} for c in expected}
    unknown, misshapen = [], []
    for key, tensor in state.items():
        if _FREQ_BANDS.match(key):
            official = PositionalEncoding.frequencies(tensor.shape[-1]).reshape(tensor.shape)
            if not torch.equal(tensor.float(), official):
                misshapen.append(f"{key} (not the official positional-encoding frequencies)")
            continue
        target = _target_name(key)
        if target is None or target[0] not in expected:
            unknown.append(key)
            continue
        component, inner = target
        if inner not in expected[component]:
            if key not in _DROPPED:
                unknown.append(key)
            continue
        if tuple(tensor.shape) != expected[component][inner]:
            misshapen.append(f"{key} {tuple(tensor.shape)} (expected {expected[component][inner]})")
        mapped[component][inner] = tensor
    missing = [f"{c}: {k}" for c, keys in expected.items() for k in keys if k not in mapped[c]]
    problems = [
        (f"{len(found)} {what}", found)
        for what, found in (("unknown keys", unknown), ("missing keys", missing), ("wrong shapes or values", misshapen))
        if found
    ]
    if problems:
        lines = "\n".join(
            f"  {title}: {', '.join(found[:_LISTED])}{' ...' if len(found) > _LISTED else ''}"
            for title, found in problems
        )
        raise CheckpointKeyError(f"not an official MVDiffusion checkpoint for this base model:\n{lines}")
    return mapped


def _expected_shapes(base: Path) -> tuple[dict[str, dict[str, tuple[int, ...]]], dict]:
    """{component: {key: shape}} of the modules the base folder's configs describe, and the CAA config."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .models.caa import MultiViewCAA

    with torch.device("meta"):  # shapes only, no memory
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
        modules = {
            "unet": unet,
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(base / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(base / "text_encoder")),
            "caa": MultiViewCAA.for_unet(unet),
        }
    shapes = {name: {k: tuple(v.shape) for k, v in m.state_dict().items()} for name, m in modules.items()}
    return shapes, modules["caa"]


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))


def convert_mvdiffusion(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    variant: str = "mvdiffusion",
    base_dir: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Convert ``pano.ckpt`` (``variant="mvdiffusion"``) or ``pano_outpaint.ckpt``
    (``"mvdiffusion-outpaint"``) into ``out_dir``; return it.

    ``base_dir``: the SD-2 base (inpainting) diffusers folder that provides configs, tokenizer and
    scheduler; default ``weights.find_sd_folder`` of the variant's base model. ``out_dir`` must
    not exist yet; it appears only when the conversion succeeded.
    """
    spec = weights.MODELS.get(variant)
    if spec is None or spec.kind != "mvdiffusion":
        choices = [n for n, s in weights.MODELS.items() if s.kind == "mvdiffusion"]
        raise MissingWeights(f"unknown MVDiffusion variant {variant!r}; choose from {', '.join(choices)}")
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists():
        raise MissingWeights(f"{out_dir}: already exists; remove it or choose another folder")
    report = progress or (lambda stage, step, total: None)
    base = weights.find_sd_folder(spec.base, base_dir, model_dir)
    report("read", 0, 3)
    state = read_checkpoint(checkpoint)
    report("map", 1, 3)
    expected, caa = _expected_shapes(base)
    mapped = map_official_keys(state, expected)
    report("write", 2, 3)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for name in ("tokenizer", "scheduler"):
            shutil.copytree(base / name, staging / name)
        shutil.copy(base / "model_index.json", staging / "model_index.json")
        files = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}
        for name, stem in files.items():
            (staging / name).mkdir()
            shutil.copy(base / name / "config.json", staging / name / "config.json")
            _save(mapped[name], staging / name / f"{stem}.safetensors")
        (staging / "caa").mkdir()
        caa.to_json_file(staging / "caa" / "config.json")
        _save(mapped["caa"], staging / "caa" / "diffusion_pytorch_model.safetensors")
        (staging / "conversion.json").write_text(
            json.dumps(dict(source=Path(checkpoint).name, variant=variant, base=str(base)), indent=2)
        )
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return weights.check_mvdiffusion_folder(out_dir, variant)
