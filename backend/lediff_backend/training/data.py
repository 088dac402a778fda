"""Training data: HDR images -> random views -> simulated exposure brackets (LEDiff §3.2, §4).

Functions and classes
---------------------
- ``find_hdr_files``: every OpenEXR / Radiance HDR file under a folder, sorted.
- ``ViewSettings`` (from ``config``): size and randomisation of the views cut from each image.
- ``working_image`` / ``random_view``: panoramas (2:1) are looked at through random pinhole
  cameras, as the paper does for its panorama datasets; other images give random square crops.
- ``simulate_sample``: the bracket {I-, I0, I+} of one view, one CRF drawn for it, and the
  log-HDR target the decoder learns.
- ``BracketDataset``: a torch dataset of such samples; sample ``i`` depends only on (seed, i),
  so a cached latent is exactly what the sample would give again.
- ``encode_bracket``: the scaled Stable Diffusion latents of a bracket, as the pipeline encodes;
  ``batch_latents``: those of a batch, cached or encoded now.
- ``LatentCache``: optional on-disk cache of the latents (and targets) of a dataset.

Units: views are scene-linear HxWx3 float32; brackets display-encoded in [0, 1], 8-bit steps,
ordered darkest first (C-, C0, C+, the fusion's order); the target is the natural log of the
HDR scaled so that the middle exposure's saturation point is 1 (``log(H · 2**E0)``).
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import BadInput
from ..hdr.atomic import atomic_output
from ..hdr.exposure import simulate_brackets
from ..hdr.imageio import HDR_EXTENSIONS, read_image
from ..hdr.projection import equirect_to_perspective, resize_equirect
from .config import ViewSettings

__all__ = [
    "LOG_FLOOR",
    "ViewSettings",
    "find_hdr_files",
    "working_image",
    "random_view",
    "simulate_sample",
    "BracketDataset",
    "encode_bracket",
    "batch_latents",
    "files_key",
    "LatentCache",
]

LOG_FLOOR = 2.0**-20  # scene-linear values below this (at the middle exposure) are black in log space
_VIEW_TRIES = 8  # random views tried before an image is declared black


def find_hdr_files(folder: str | os.PathLike) -> list[Path]:
    """Every EXR / Radiance HDR file under ``folder`` (recursively), sorted; BadInput if none."""
    root = Path(folder)
    if not root.is_dir():
        raise BadInput(f"training data folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in HDR_EXTENSIONS and p.is_file())
    if not files:
        raise BadInput(f"no HDR images ({', '.join(HDR_EXTENSIONS)}) under {root}")
    return files


def _is_panorama(image: np.ndarray) -> bool:
    return image.shape[1] == 2 * image.shape[0]


def working_image(image: np.ndarray, settings: ViewSettings) -> np.ndarray:
    """A panorama shrunk (exact area averages) to the resolution the narrowest view needs.

    Sampling the views from it instead of the full-size panorama avoids aliasing small bright
    lights and makes each view cheap. Other images are returned as they are.
    """
    if not _is_panorama(image):
        return image
    width = math.ceil(settings.size * 360.0 / settings.fov_deg[0])
    return resize_equirect(image, width) if width < image.shape[1] else image


def _resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Area-average (shrinking) or bilinear (growing) resize of an HxWx3 image to size x size."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    mode = "area" if size <= min(image.shape[:2]) else "bilinear"
    return torch.nn.functional.interpolate(x, size=(size, size), mode=mode).squeeze(0).permute(1, 2, 0).numpy()


def random_view(image: np.ndarray, settings: ViewSettings, rng: np.random.Generator) -> np.ndarray:
    """One random size x size view of a working image (see ``working_image``), float32."""
    size = settings.size
    if _is_panorama(image):
        fov = rng.uniform(*settings.fov_deg)
        yaw = rng.uniform(-180.0, 180.0)
        pitch = rng.uniform(-settings.max_pitch_deg, settings.max_pitch_deg)
        return equirect_to_perspective(image, size, size, fov, yaw, pitch, fast=True)  # random crops: speed over 1/32 px
    height, width = image.shape[:2]
    side = max(1, round(rng.uniform(*settings.crop_scale) * min(height, width)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return _resize_square(image[top : top + side, left : left + side], size)


def simulate_sample(view: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The training sample of one scene-linear view (paper §3.2).

    Returns ``bracket`` (3, 3, H, W): I-, I0, I+ display-encoded with one CRF drawn from
    ``rng`` (β ~ N(0.6, 0.1), γ ~ N(0.9, 0.1)) at EVs spanning the view's range, the middle one
    halfway; ``evs`` (3,); ``crf`` (β, γ); ``log_hdr`` (3, H, W) = log(max(H·2**E0, LOG_FLOOR)).
    Raises ValueError for a black view.
    """
    exposures = simulate_brackets(view, 3, rng=rng)
    middle = exposures[1].ev
    log_hdr = np.log(np.maximum(view * np.float32(2.0**middle), np.float32(LOG_FLOOR)))
    return dict(
        bracket=np.stack([e.pixels.transpose(2, 0, 1) for e in exposures]),
        evs=np.array([e.ev for e in exposures], np.float32),
        crf=np.array(exposures[0].response, np.float32),
        log_hdr=log_hdr.transpose(2, 0, 1).astype(np.float32),
    )


class BracketDataset(torch.utils.data.Dataset):
    """Simulated exposure brackets from HDR files: ``views_per_image`` samples per file.

    Sample ``i`` is view ``i // len(files)`` of file ``i % len(files)``, drawn with
    ``np.random.default_rng([seed, i])``: the same index always gives the same sample. Items
    are dicts of tensors (``index``, ``bracket``, ``log_hdr``, ``evs``, ``crf``; see
    ``simulate_sample``). The last ``image_cache`` working images stay in memory (per worker).
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        settings: ViewSettings,
        views_per_image: int,
        seed: int = 0,
        image_cache: int = 8,
    ):
        if not files:
            raise BadInput("a training dataset needs at least one HDR file")
        self.files = [Path(f) for f in files]
        self.settings = settings
        self.views_per_image = views_per_image
        self.seed = seed
        self.image_cache = image_cache
        self._images: OrderedDict[Path, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.files) * self.views_per_image

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": OrderedDict()}  # workers start with an empty cache

    def describe(self) -> dict:
        """What determines the samples (for cache manifests): files, settings, seed."""
        return dict(
            files=[[p.name, p.stat().st_size] for p in self.files],
            settings=asdict(self.settings),
            views_per_image=self.views_per_image,
            seed=self.seed,
        )

    def _working_image(self, path: Path) -> np.ndarray:
        if path in self._images:
            self._images.move_to_end(path)
            return self._images[path]
        image = read_image(path)
        if not image.is_hdr:
            raise BadInput(f"{path}: not an HDR image")
        work = working_image(image.pixels, self.settings)
        if self.image_cache > 0:
            self._images[path] = work
            while len(self._images) > self.image_cache:
                self._images.popitem(last=False)
        return work

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        path = self.files[index % len(self.files)]
        rng = np.random.default_rng([self.seed, index])
        image = self._working_image(path)
        for _ in range(_VIEW_TRIES):
            try:
                sample = simulate_sample(random_view(image, self.settings, rng), rng)
            except ValueError:  # a black view: look elsewhere
                continue
            return {"index": torch.tensor(index), **{k: torch.from_numpy(v) for k, v in sample.items()}}
        raise BadInput(f"{path}: {_VIEW_TRIES} random views were all black")


@torch.no_grad()
def encode_bracket(vae, bracket: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3, H, W) display-encoded brackets -> (N, 3, C, H/f, W/f) scaled latents.

    As ``LEDiffPipeline.encode_image``: the posterior mode of ``2·I − 1``, times the VAE's
    scaling factor.
    """
    n, k = bracket.shape[:2]
    x = bracket.flatten(0, 1).to(vae.device, vae.dtype) * 2.0 - 1.0
    latents = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
    return latents.unflatten(0, (n, k)).float()


def batch_latents(batch: dict, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The latents of a batch: cached ones, or its brackets encoded now."""
    return batch["latents"] if "latents" in batch else encode(batch["bracket"])


def files_key(folder: str | os.PathLike) -> list:
    """[name, size, mtime] of every file under ``folder``: changes when its weights change."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [[str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


class LatentCache(torch.utils.data.Dataset):
    """The latents of a ``BracketDataset`` on disk, one safetensors file per sample.

    Items are dicts with ``index`` and ``latents`` (3, C, h, w) float32, plus ``log_hdr`` (stored
    as float16) when ``with_hdr``. ``manifest.json`` records what the files were made from (the
    dataset's ``describe()``, the encoder ``key``, ``with_hdr``); when that changes, the old
    sample files are removed and encoded again. ``fill`` encodes what is missing, each process
    its share, so the same cache folder serves one GPU or many.
    """

    def __init__(self, folder: str | os.PathLike, dataset: BracketDataset, key: dict, with_hdr: bool):
        self.folder = Path(folder)
        self.dataset = dataset
        self.with_hdr = with_hdr
        self.manifest = dict(dataset=dataset.describe(), encoder=key, with_hdr=with_hdr)

    def __len__(self) -> int:
        return len(self.dataset)

    def path(self, index: int) -> Path:
        return self.folder / f"{index:08d}.safetensors"

    def _start(self) -> None:
        """Create the folder; drop sample files made from other data or another encoder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "manifest.json"
        if manifest.is_file() and json.loads(manifest.read_text()) == self.manifest:
            return
        for stale in self.folder.glob("[0-9]*.safetensors"):
            stale.unlink()
        manifest.write_text(json.dumps(self.manifest, indent=1))

    def fill(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        accelerator,
        batch_size: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Encode every sample without a file; ``encode`` maps brackets to latents (``encode_bracket``)."""
        from safetensors.torch import save_file

        if accelerator.is_main_process:
            self._start()
        accelerator.wait_for_everyone()
        missing = [i for i in range(len(self)) if not self.path(i).is_file()]
        with accelerator.split_between_processes(missing) as mine:
            for start in range(0, len(mine), batch_size):
                samples = [self.dataset[i] for i in mine[start : start + batch_size]]
                latents = encode(torch.stack([s["bracket"] for s in samples]))
                for sample, latent in zip(samples, latents.cpu()):
                    tensors = {"latents": latent.contiguous()}
                    if self.with_hdr:
                        tensors["log_hdr"] = sample["log_hdr"].half()
                    with atomic_output(self.path(int(sample["index"]))) as tmp:
                        save_file(tensors, str(tmp))
                if progress is not None:
                    progress(min(start + batch_size, len(mine)), len(mine))
        accelerator.wait_for_everyone()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        tensors = load_file(str(self.path(index)))
        item = {"index": torch.tensor(index), "latents": tensors["latents"]}
        if self.with_hdr:
            item["log_hdr"] = tensors["log_hdr"].float()
        return item
