"""Model folders: names, layout checks, checkpoint loading and the download command.

One models root (``--model-dir``, ``LEDIFF_MODELS``, or the add-on preference) holds one
subfolder per model, named by ``MODELS``. ``--model-dir`` may also name one model's own folder.
Every folder is in its *official* layout, unchanged:

- LEDiff highlight / shadow (the official Google Drive zips, unzipped): a diffusers Stable
  Diffusion folder (``model_index.json``, ``unet/`` with 8 input channels = noisy latent +
  condition latent, ``vae/`` whose decoder is the fine-tuned log-HDR decoder, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/``) plus the latent fusion weights ``vae/merge_model.pth``
  (the official code also looks in ``merge_model/merge_model.pth``).
- base SD (text -> HDR): a diffusers Stable Diffusion 1.5 folder; if absent, the hub id's
  snapshot in the standard Hugging Face cache is used.
- GMODiff (bracket merge): the two official files ``gmodiff/model_zoo/dareg_mask.pth`` and
  ``gmodiff/model_zoo/gmodiff.pkl`` on the Stable Diffusion 2.1 base ``sd21-base`` (a diffusers
  folder or the hub snapshot); see ``gmodiff_weights``.
- LF-Diff (bracket merge): no official weights exist; ``lfdiff/`` holds what ``lediff train
  lfdiff-stage1|lfdiff-stage2`` exports, in the layout ``lfdiff_weights`` documents.
- MVDiffusion (panorama; outpainting): the official Lightning checkpoint ``pano.ckpt``
  (``pano_outpaint.ckpt``) converted once by ``lediff convert-weights`` into a diffusers SD-2
  folder (``unet/`` with 4 (9) input channels, ``vae/``, ``text_encoder/``, ``tokenizer/``,
  ``scheduler/``) plus ``caa/`` (the correspondence-aware attention blocks, safetensors). The
  conversion takes configs and tokenizer from ``sd2-base`` (``sd2-inpainting``): a diffusers
  folder in the root or the hub snapshot in the Hugging Face cache.

Every missing or wrong file raises ``errors.MissingWeights`` naming it and saying what to place
where. Checkpoints load safetensors first; pickles only through ``torch.load(weights_only=True)``.
Nothing here imports torch at module import time, and nothing needs the network to run:
``download_model`` is the one function that goes online, and offline it explains what to place.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import MissingWeights

__all__ = [
    "ENV_VAR",
    "DEFAULT_ROOT",
    "MODELS",
    "ModelSpec",
    "LediffFolders",
    "models_root",
    "is_model_folder",
    "check_lediff_folder",
    "check_sd_folder",
    "find_lediff_folders",
    "find_base_sd",
    "find_sd_folder",
    "check_mvdiffusion_folder",
    "find_mvdiffusion",
    "fusion_weights_path",
    "load_state_dict",
    "load_fusion",
    "lediff_available",
    "model_status",
    "manual_instructions",
    "download_model",
]

ENV_VAR = "LEDIFF_MODELS"
DEFAULT_ROOT = Path.home() / "lediff-models"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ModelSpec:
    """A model the backend knows: its folder name under the root and where it comes from."""

    name: str  # CLI name and folder name under the models root
    title: str
    kind: str  # "lediff" (8-channel conditional unet + fusion), "sd" (plain Stable Diffusion), "mvdiffusion",
    # "gmodiff", "lfdiff"
    gdrive_id: str | None = None  # official zip on Google Drive
    hub_id: str | None = None  # Hugging Face hub repository
    checkpoint_url: str | None = None  # official checkpoint file (MVDiffusion: Dropbox), converted after download
    in_channels: int = 4  # the unet's input channels ("sd" and "mvdiffusion")
    base: str | None = None  # "mvdiffusion": the SD model whose configs and tokenizer the conversion uses
    # an official release that only a person can download (GMODiff: Baidu Netdisk), or where no
    # weights are released, the paper whose recipe trains them (LF-Diff)
    release_url: str | None = None

    @property
    def url(self) -> str:
        if self.release_url:
            return self.release_url
        if self.checkpoint_url:
            return self.checkpoint_url
        if self.gdrive_id:
            return f"https://drive.google.com/file/d/{self.gdrive_id}/view"
        return f"https://huggingface.co/{self.hub_id}"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "lediff-highlight",
            "LEDiff highlight hallucination (official, CVPR 2025)",
            "lediff",
            gdrive_id="1gd9KNmOQ3RH4yvX_Fp4hu2Jko64nbt2j",
        ),
        ModelSpec(
            "lediff-shadow",
            "LEDiff shadow hallucination (official, CVPR 2025)",
            "lediff",
            gdrive_id="1tMk0rovHSt93wSeIiQ6fxsxPTCiZ6Dmw",
        ),
        ModelSpec(
            "sd-base",
            "Stable Diffusion 1.5, the base model for text -> HDR",
            "sd",
            hub_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        ),
        ModelSpec(
            "mvdiffusion",
            "MVDiffusion panorama model (official pano.ckpt, NeurIPS 2023), converted",
            "mvdiffusion",
            checkpoint_url=(
                "https://www.dropbox.com/scl/fi/yx9e0lj4fwtm9xh2wlhhg/pano.ckpt"
                "?rlkey=kowqygw7vt64r3maijk8klfl0&dl=0"
            ),
            base="sd2-base",
        ),
        ModelSpec(
            "mvdiffusion-outpaint",
            "MVDiffusion panorama outpainting model (official pano_outpaint.ckpt), converted",
            "mvdiffusion",
            checkpoint_url=(
                "https://www.dropbox.com/scl/fi/3mtj06qx6mxt4eme1oz2r/pano_outpaint.ckpt"
                "?rlkey=xat6cwt47lzfjawum05xa5ftq&dl=0"
            ),
            in_channels=9,
            base="sd2-inpainting",
        ),
        ModelSpec(
            "sd2-base",
            "Stable Diffusion 2 base (configs and tokenizer for converting MVDiffusion)",
            "sd",
            hub_id="stabilityai/stable-diffusion-2-base",
        ),
        ModelSpec(
            "sd2-inpainting",
            "Stable Diffusion 2 inpainting (configs and tokenizer for converting MVDiffusion outpainting)",
            "sd",
            hub_id="stabilityai/stable-diffusion-2-inpainting",
            in_channels=9,
        ),
        ModelSpec(
            "gmodiff",
            "GMODiff gain-map bracket merge (official dareg_mask.pth + gmodiff.pkl, ECCV 2026)",
            "gmodiff",
            release_url="https://pan.baidu.com/s/1qY0_HG5ALpNROGNX8nbcMQ?pwd=chgh",
            base="sd21-base",
        ),
        ModelSpec(
            "lfdiff",
            "LF-Diff low-frequency prior bracket merge (CVPR 2024; no official weights: lediff train lfdiff-*)",
            "lfdiff",
            release_url="https://arxiv.org/abs/2404.00849",
        ),
        ModelSpec(
            "sd21-base",
            "Stable Diffusion 2.1 base (the base model GMODiff's adapters apply to)",
            "sd",
            hub_id="stabilityai/stable-diffusion-2-1-base",
        ),
    )
}

# Files of a diffusers / transformers component, best first (safetensors before pickles).
_DIFFUSERS_WEIGHTS = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.bin.index.json",
)
_TRANSFORMERS_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_FUSION_FILES = ("vae/merge_model.safetensors", "vae/merge_model.pth", "merge_model/merge_model.pth")
# What the hub download fetches of a Stable Diffusion repository (no EMA/ckpt duplicates).
_SD_HUB_PATTERNS = [
    "model_index.json",
    "*/config.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
]


@dataclass(frozen=True)
class LediffFolders:
    """The LEDiff model folders found for one run; at least one is set."""

    highlight: Path | None
    shadow: Path | None


def models_root(model_dir: str | os.PathLike | None = None) -> Path:
    """The models root: ``model_dir``, else ``$LEDIFF_MODELS``, else ``~/lediff-models``."""
    chosen = model_dir or os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(chosen).expanduser().absolute()


def is_model_folder(path: Path) -> bool:
    """True when ``path`` is one model's own folder rather than a models root."""
    return (path / "model_index.json").is_file() or (path / "unet").is_dir()


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _read_json(path: Path, problems: list[str]) -> dict | None:
    if not path.is_file():
        problems.append(f"{path}: missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path}: unreadable JSON ({exc})")
        return None


def _component_problems(folder: Path, unet_in_channels: int) -> list[str]:
    """Problems of the diffusers Stable Diffusion layout in ``folder``, one line per file."""
    problems: list[str] = []
    if not folder.is_dir():
        return [f"{folder}: folder missing"]
    _read_json(folder / "model_index.json", problems)
    for sub, weights in (
        ("unet", _DIFFUSERS_WEIGHTS),
        ("vae", _DIFFUSERS_WEIGHTS),
        ("text_encoder", _TRANSFORMERS_WEIGHTS),
    ):
        config = _read_json(folder / sub / "config.json", problems)
        if _first_existing(folder / sub, weights) is None:
            problems.append(f"{folder / sub / weights[0]}: missing (or {', '.join(weights[1:])})")
        if sub == "unet" and config is not None and config.get("in_channels") != unet_in_channels:
            problems.append(
                f"{folder / 'unet/config.json'}: in_channels is {config.get('in_channels')}, expected"
                f" {unet_in_channels}" + (" (noisy latent + condition latent)" if unet_in_channels == 8 else "")
            )
    _read_json(folder / "scheduler" / "scheduler_config.json", problems)
    tokenizer = folder / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        problems += [f"{tokenizer / n}: missing" for n in ("vocab.json", "merges.txt") if not (tokenizer / n).is_file()]
    return problems


def _raise(spec: ModelSpec, folder: Path, problems: list[str]) -> None:
    if problems:
        lines = "\n  ".join(problems)
        how = manual_instructions(spec.name, folder.parent, folder)
        raise MissingWeights(f"{spec.title} at {folder} is incomplete:\n  {lines}\n{how}")


def fusion_weights_path(folder: Path) -> Path | None:
    """The latent fusion checkpoint of a LEDiff folder, safetensors first."""
    return _first_existing(folder, _FUSION_FILES)


def check_lediff_folder(folder: str | os.PathLike, name: str = "lediff-highlight") -> Path:
    """Check a LEDiff folder's layout; return it, or raise MissingWeights listing every problem."""
    folder = Path(folder).expanduser().absolute()
    problems = _component_problems(folder, unet_in_channels=8)
    if folder.is_dir() and fusion_weights_path(folder) is None:
        problems.append(f"{folder / 'vae/merge_model.pth'}: missing (the latent fusion weights)")
    _raise(MODELS[name], folder, problems)
    return folder


def check_sd_folder(folder: str | os.PathLike, name: str = "sd-base") -> Path:
    """Check a plain Stable Diffusion folder (the model's unet channels); return it or raise MissingWeights."""
    folder = Path(folder).expanduser().absolute()
    _raise(MODELS[name], folder, _component_problems(folder, unet_in_channels=MODELS[name].in_channels))
    return folder


def check_mvdiffusion_folder(folder: str | os.PathLike, name: str = "mvdiffusion") -> Path:
    """Check a converted MVDiffusion folder (SD-2 layout plus ``caa/``); return it or raise MissingWeights."""
    folder = Path(folder).expanduser().absolute()
    problems = _component_problems(folder, unet_in_channels=MODELS[name].in_channels)
    if folder.is_dir():
        _read_json(folder / "caa" / "config.json", problems)
        if _first_existing(folder / "caa", _DIFFUSERS_WEIGHTS[:1]) is None:
            problems.append(f"{folder / 'caa' / _DIFFUSERS_WEIGHTS[0]}: missing (the CAA blocks)")
    _raise(MODELS[name], folder, problems)
    return folder


def find_mvdiffusion(model_dir: str | os.PathLike | None = None, name: str = "mvdiffusion") -> Path:
    """The converted MVDiffusion folder: ``model_dir`` itself when it is one, else ``<root>/<name>``."""
    root = models_root(model_dir)
    folder = root if (root / "caa").is_dir() else root / name
    if not folder.exists():
        raise MissingWeights(f"no {MODELS[name].title} in {root}.\n{manual_instructions(name, root)}")
    return check_mvdiffusion_folder(folder, name)


def find_lediff_folders(
    model_dir: str | os.PathLike | None, shadow_model_dir: str | os.PathLike | None = None
) -> LediffFolders:
    """Resolve and check the LEDiff folders for a run.

    ``model_dir`` is a models root (then ``lediff-highlight`` and ``lediff-shadow`` inside it are
    used when present) or the highlight model's own folder. ``shadow_model_dir`` names the shadow
    model's folder explicitly. At least one model must be present.
    """
    root = models_root(model_dir)
    highlight: Path | None
    shadow = Path(shadow_model_dir).expanduser().absolute() if shadow_model_dir else None
    if is_model_folder(root):
        highlight = root
    else:
        highlight = root / "lediff-highlight" if (root / "lediff-highlight").exists() else None
        if shadow is None and (root / "lediff-shadow").exists():
            shadow = root / "lediff-shadow"
    if highlight is None and shadow is None:
        raise MissingWeights(f"no LEDiff model in {root}.\n" + manual_instructions("lediff-highlight", root))
    return LediffFolders(
        highlight=check_lediff_folder(highlight, "lediff-highlight") if highlight else None,
        shadow=check_lediff_folder(shadow, "lediff-shadow") if shadow else None,
    )


def find_base_sd(base_model_dir: str | os.PathLike | None = None, model_dir: str | os.PathLike | None = None) -> Path:
    """The base Stable Diffusion folder for text -> HDR (``find_sd_folder`` of ``sd-base``)."""
    return find_sd_folder("sd-base", base_model_dir, model_dir)


def find_sd_folder(
    name: str, folder: str | os.PathLike | None = None, model_dir: str | os.PathLike | None = None
) -> Path:
    """A plain Stable Diffusion model's folder (``name`` of kind "sd").

    ``folder`` (the folder itself or a root holding ``<name>``), else ``<name>`` in the models
    root, else the hub snapshot already in the Hugging Face cache (never downloads).
    """
    spec = MODELS[name]
    if folder:
        path = Path(folder).expanduser().absolute()
        return check_sd_folder(path if is_model_folder(path) else path / spec.name, name)
    local = models_root(model_dir) / spec.name
    if local.exists():
        return check_sd_folder(local, name)
    cached = _hub_snapshot(spec, local_only=True)
    if cached is not None:
        return check_sd_folder(cached, name)
    raise MissingWeights(f"not found: {spec.title}.\n{manual_instructions(spec.name, local.parent)}")


def _hub_snapshot(spec: ModelSpec, local_only: bool) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return None
    try:
        return Path(snapshot_download(spec.hub_id, allow_patterns=_SD_HUB_PATTERNS, local_files_only=local_only))
    except LocalEntryNotFoundError:
        if local_only:
            return None
        raise


def load_fusion(folder: str | os.PathLike):
    """The ``LatentFusion`` module of a LEDiff folder, loaded strictly from its official checkpoint."""
    from .models.fusion import FusionStateError, LatentFusion

    path = fusion_weights_path(Path(folder))
    if path is None:
        raise MissingWeights(f"{Path(folder) / 'vae/merge_model.pth'}: missing (the latent fusion weights)")
    fusion = LatentFusion()
    try:
        fusion.load_official_state_dict(load_state_dict(path))
    except FusionStateError as exc:
        raise MissingWeights(
            f"{path}: not LEDiff latent fusion weights: {exc}. Place the official vae/merge_model.pth"
            " from the unzipped LEDiff model there."
        ) from exc
    return fusion


def load_state_dict(path: Path) -> dict:
    """A flat tensor dict from a safetensors file or, failing that name, a weights-only pickle."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or non-weights pickles all land here
        raise MissingWeights(f"{path}: cannot be read as a checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise MissingWeights(f"{path}: holds a {type(state).__name__}, expected a state dict of tensors")
    return state


def lediff_available(model_dir: str | os.PathLike | None) -> bool:
    """True when the neural stack is installed and a complete LEDiff model is in ``model_dir``."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("diffusers") is None:
        return False
    try:
        find_lediff_folders(model_dir)
    except MissingWeights:
        return False
    return True


def model_status(name: str, model_dir: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """(folder, "ok", "not installed" or the first problem) for ``lediff models list``."""
    spec = MODELS[name]
    folder = models_root(model_dir) / spec.name
    try:
        if spec.kind == "gmodiff":
            from .gmodiff_weights import check_gmodiff_folder

            return (check_gmodiff_folder(folder), "ok") if folder.exists() else (None, "not installed")
        if spec.kind == "lfdiff":
            from .lfdiff_weights import check_lfdiff_folder

            return (check_lfdiff_folder(folder), "ok") if folder.exists() else (None, "not installed")
        if spec.kind in ("lediff", "mvdiffusion"):
            if not folder.exists():
                return None, "not installed"
            check = check_lediff_folder if spec.kind == "lediff" else check_mvdiffusion_folder
            return check(folder, name), "ok"
        found = find_sd_folder(name, model_dir=model_dir)
        return found, "ok" if found == folder else "ok (Hugging Face cache)"
    except MissingWeights as exc:
        problem = str(exc).splitlines()
        return (folder if folder.exists() else None), (problem[1].strip() if folder.exists() else "not installed")


def manual_instructions(name: str, root: str | os.PathLike, folder: Path | None = None) -> str:
    """Exactly what to download and where to place it, for machines without internet access."""
    spec = MODELS[name]
    folder = folder or Path(root) / spec.name
    if spec.kind == "gmodiff":
        from .gmodiff_weights import manual_instructions as gmodiff_instructions

        return gmodiff_instructions(root, folder)
    if spec.kind == "lfdiff":
        from .lfdiff_weights import instructions

        return instructions(folder)
    if spec.checkpoint_url:
        checkpoint = spec.checkpoint_url.rsplit("/", 1)[-1].split("?")[0]
        return (
            f"To install {spec.title}: download {checkpoint} from {spec.url} , then run"
            f" lediff convert-weights {spec.name} {checkpoint} {folder}"
            f" (it takes the configs and tokenizer from {MODELS[spec.base].title}: a diffusers folder at"
            f" {Path(root) / spec.base} or {MODELS[spec.base].url} in the Hugging Face cache)."
            f" On a machine with internet access: lediff models download {spec.name} --model-dir {Path(root)}"
        )
    if spec.gdrive_id:
        return (
            f"To install {spec.title}: download the zip from {spec.url} , unzip it, and place its"
            f" contents so that {folder / 'model_index.json'}, {folder / 'unet/config.json'} and"
            f" {folder / 'vae/merge_model.pth'} exist (with unet/, vae/, text_encoder/, tokenizer/ and"
            f" scheduler/ beside them). On a machine with internet access:"
            f" lediff models download {spec.name} --model-dir {Path(root)}"
        )
    return (
        f"To install {spec.title}: place a diffusers Stable Diffusion folder (model_index.json, unet/,"
        f" vae/, text_encoder/, tokenizer/, scheduler/) at {folder}, e.g. from {spec.url} . On a machine"
        f" with internet access: lediff models download {spec.name} (into the Hugging Face cache)"
    )


def download_model(
    name: str,
    model_dir: str | os.PathLike | None = None,
    *,
    offline: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Download, verify and install one model; return its folder. Offline: MissingWeights with instructions.

    Google Drive zips (``gdown``) are unzipped into ``<root>/<name>``; hub models go into the
    standard Hugging Face cache; official checkpoint files (MVDiffusion) are downloaded and
    converted into ``<root>/<name>``. ``progress(stage, step, total)`` reports the stages.
    """
    spec = MODELS[name]
    root = models_root(model_dir)
    report = progress or (lambda stage, step, total: None)
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if spec.kind == "gmodiff":  # Baidu Netdisk: a person has to fetch it
        from .gmodiff_weights import check_gmodiff_folder

        if (root / spec.name).exists():
            return check_gmodiff_folder(root / spec.name)
        raise MissingWeights(f"{spec.title} cannot be downloaded by a program.\n{manual_instructions(name, root)}")
    if spec.kind == "lfdiff":  # nothing to download: trained here
        from .lfdiff_weights import check_lfdiff_folder

        if (root / spec.name).exists():
            return check_lfdiff_folder(root / spec.name)
        raise MissingWeights(f"{spec.title}.\n{manual_instructions(name, root)}")
    if spec.checkpoint_url:
        return _download_checkpoint(spec, root, offline, report)
    if spec.hub_id:
        if offline:
            raise MissingWeights(f"offline: nothing downloaded.\n{manual_instructions(name, root)}")
        report("download", 0, 1)
        try:
            path = _hub_snapshot(spec, local_only=False)
        except Exception as exc:  # network, auth or disk errors: say what to do instead
            raise MissingWeights(
                f"download of {spec.hub_id} failed ({exc}).\n{manual_instructions(name, root)}"
            ) from exc
        report("download", 1, 1)
        return check_sd_folder(path, name)
    target = root / spec.name
    if target.exists():
        return check_lediff_folder(target, name)
    if offline:
        raise MissingWeights(f"offline: nothing downloaded.\n{manual_instructions(name, root)}")
    try:
        import gdown
    except ImportError:
        raise MissingWeights(
            f"the download needs gdown (pip install gdown).\n{manual_instructions(name, root)}"
        ) from None
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f".{spec.name}.zip"
    report("download", 0, 3)
    try:
        if gdown.download(id=spec.gdrive_id, output=str(archive), quiet=False) is None:
            raise OSError("Google Drive refused the download (quota or link change)")
    except Exception as exc:  # network errors, quota pages, interrupted transfers
        archive.unlink(missing_ok=True)
        raise MissingWeights(f"download of {spec.url} failed ({exc}).\n{manual_instructions(name, root)}") from exc
    report("verify", 1, 3)
    try:
        _unzip_model(archive, target)
    finally:
        archive.unlink(missing_ok=True)
    report("install", 3, 3)
    return target


def _download_checkpoint(spec: ModelSpec, root: Path, offline: bool, report: Progress) -> Path:
    """Fetch an official checkpoint file and convert it into ``<root>/<name>`` (MVDiffusion)."""
    import urllib.request

    target = root / spec.name
    if target.exists():
        return check_mvdiffusion_folder(target, spec.name)
    if offline:
        raise MissingWeights(f"offline: nothing downloaded.\n{manual_instructions(spec.name, root)}")
    try:
        base = find_sd_folder(spec.base, model_dir=root)
    except MissingWeights:
        base = download_model(spec.base, root, progress=report)
    root.mkdir(parents=True, exist_ok=True)
    checkpoint = root / f".{spec.name}.ckpt"
    report("download", 0, 3)
    try:
        url = spec.checkpoint_url.replace("dl=0", "dl=1")  # Dropbox: the file, not its web page
        with urllib.request.urlopen(url, timeout=60) as response, open(checkpoint, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        report("convert", 1, 3)
        from .mvdiffusion_weights import convert_mvdiffusion

        convert_mvdiffusion(checkpoint, target, variant=spec.name, base_dir=base)
    except MissingWeights:
        raise
    except Exception as exc:  # network errors, truncated downloads
        raise MissingWeights(f"download of {spec.url} failed ({exc}).\n{manual_instructions(spec.name, root)}") from exc
    finally:
        checkpoint.unlink(missing_ok=True)
    report("install", 3, 3)
    return target


def _unzip_model(archive: Path, target: Path) -> None:
    """Verify a model zip, extract it and move the folder holding ``unet/`` to ``target``."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise MissingWeights(f"{archive}: damaged download (CRC error in {bad}); run the command again")
            for member in zf.namelist():
                if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                    raise MissingWeights(f"{archive}: unsafe path {member!r} in the zip")
            zf.extractall(staging)
        found = sorted(p.parent.parent for p in staging.rglob("unet/config.json") if "__MACOSX" not in p.parts)
        if not found:
            raise MissingWeights(f"{archive}: no unet/config.json inside; is this the LEDiff model zip?")
        check_lediff_folder(found[0], target.name)
        found[0].rename(target)
    except zipfile.BadZipFile as exc:
        raise MissingWeights(f"{archive}: not a zip file ({exc}); run the command again") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
