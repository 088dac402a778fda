"""The training loop every recipe shares, on Hugging Face ``accelerate``.

The same code runs on a CPU, one GPU, or many GPUs and nodes: start it with ``lediff train``
directly, or with ``accelerate launch [--config_file configs/accelerate_multi_gpu.yaml] -m
lediff_backend.cli train ...``; accelerate sets up the processes, data sharding, gradient
all-reduce and mixed precision. No process is started here.

``train(recipe, config, data_dir, out_dir)`` writes into ``out_dir``:

- ``loss.jsonl``: one JSON object per optimisation step (``step``, the recipe's losses averaged
  over processes and micro-batches, ``lr``, ``seconds``), and ``val_*`` lines after validations;
- ``checkpoints/step-NNNNNNNN/``: ``accelerator.save_state`` (models, optimizers, RNG states,
  EMA, the step); ``resume=True`` continues from the newest one (and drops later log lines),
  and a fresh run refuses a folder that has checkpoints;
- ``validation/step-NNNNNNNN.png``: the recipe's validation picture of fixed samples;
- ``export/``: the trained model in the official folder layout (EMA weights when enabled);
- ``config.json``: the configuration the run used.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from ..errors import BadInput
from ..hdr.ldr import write_png
from .config import TrainConfig
from .data import BracketDataset, LatentCache, find_hdr_files

__all__ = ["Recipe", "TrainResult", "train", "latest_checkpoint", "optimizer_step"]

# report(stage, step, total, values): "cache" while latents are encoded, "train" per logged step.
Report = Callable[[str, int, int, dict], None]


class Recipe(Protocol):
    """A fine-tuning recipe: its models, one optimisation step, a validation picture, an export."""

    cache_with_hdr: bool  # whether cached samples must keep the log-HDR target

    def cache_key(self) -> dict:
        """What identifies the frozen encoder, for the latent cache's manifest."""

    def setup(self, accelerator, config: TrainConfig) -> None:
        """Move the models to the device, build the optimizers, ``accelerator.prepare`` them."""

    def encode(self, bracket: torch.Tensor) -> torch.Tensor:
        """(N, 3, 3, H, W) brackets -> (N, 3, C, h, w) latents with the frozen encoder."""

    def modules(self) -> list[torch.nn.Module]:
        """The prepared modules that train (gradient accumulation skips their all-reduce)."""

    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters that are trained and exported (EMA follows these)."""

    def train_step(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Forward, ``accelerator.backward`` and optimizer steps for one micro-batch; the losses.

        ``step`` counts the optimisation steps done; ``generator`` is the micro-batch's own
        random source (so a resumed run draws what the uninterrupted run would have drawn).
        """

    def validate(self, batch: dict) -> tuple[np.ndarray, dict[str, float]]:
        """A display-encoded picture (H, W, 3) of the recipe's outputs on ``batch``, and metrics."""

    def export(self, folder: Path) -> None:
        """Write the trained model to ``folder`` in the official layout."""


@dataclass(frozen=True)
class TrainResult:
    step: int  # the last optimisation step
    export: Path  # the official LEDiff folder
    log: Path  # loss.jsonl
    main_process: bool  # False in the other processes of a distributed run


class _Step:
    """The optimisation step, saved and restored with the checkpoints."""

    def __init__(self) -> None:
        self.value = 0

    def state_dict(self) -> dict:
        return {"step": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = int(state["step"])


def optimizer_step(accelerator, loss: torch.Tensor, optimizer, params, max_grad_norm: float) -> None:
    """Backward, clip (when gradients sync and ``max_grad_norm`` > 0), step and zero the gradients."""
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm > 0:
        accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest ``checkpoints/step-*`` folder of a run, or None."""
    found = sorted((Path(out_dir) / "checkpoints").glob("step-*"))
    return found[-1] if found else None


def _mixed_precision(requested: str) -> str:
    """fp16 needs a GPU: a CPU run trains in float32 instead."""
    if requested == "fp16" and not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        return "no"
    return requested


def _make_accelerator(config: TrainConfig, out_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    accelerator = Accelerator(
        mixed_precision=_mixed_precision(config.mixed_precision),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        project_config=ProjectConfiguration(project_dir=str(out_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    set_seed(config.seed)
    return accelerator


def _generator(accelerator, seed: int, batch: int) -> torch.Generator:
    """The random source of one micro-batch on one process: a function of (seed, batch, process)."""
    state = np.random.SeedSequence([seed, batch, accelerator.process_index]).generate_state(1)[0]
    return torch.Generator(accelerator.device).manual_seed(int(state))


def _collate(items: list[dict]) -> dict:
    return torch.utils.data.default_collate(items)


def _truncate_log(log: Path, step: int) -> None:
    """Keep only the log lines up to ``step`` (a resumed run writes the later ones again)."""
    if log.is_file():
        lines = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= step]
        log.write_text("".join(line + "\n" for line in lines))


class _Log:
    """Per-step loss lines: values averaged over micro-batches here and over processes."""

    def __init__(self, path: Path, accelerator):
        self.path = path
        self.accelerator = accelerator
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().float()
        self.count += 1

    def flush(self, step: int, extra: dict) -> dict:
        keys = sorted(self.sums)
        local = torch.stack([self.sums[k] / self.count for k in keys]).to(self.accelerator.device)
        values = self.accelerator.reduce(local, reduction="mean").tolist()
        self.sums, self.count = {}, 0
        entry = {"step": step, **dict(zip(keys, values)), **extra}
        self.write(entry)
        return entry

    def write(self, entry: dict) -> None:
        if self.accelerator.is_main_process:
            with self.path.open("a") as f:
                f.write(json.dumps(entry) + "\n")


def _save_checkpoint(accelerator, out_dir: Path, step: int, keep: int) -> None:
    accelerator.save_state(str(out_dir / "checkpoints" / f"step-{step:08d}"))
    if accelerator.is_main_process:
        for old in sorted((out_dir / "checkpoints").glob("step-*"))[:-keep]:
            shutil.rmtree(old)


def _validate(recipe: Recipe, batch: dict, out_dir: Path, step: int, log: _Log) -> None:
    picture, metrics = recipe.validate(batch)
    folder = out_dir / "validation"
    folder.mkdir(exist_ok=True)
    write_png(folder / f"step-{step:08d}.png", picture)
    log.write({"step": step, **{f"val_{k}": v for k, v in metrics.items()}})


def train(
    recipe: Recipe,
    config: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    report: Report | None = None,
) -> TrainResult:
    """Train ``recipe`` on the HDR files under ``data_dir`` for ``config.steps`` steps; export it."""
    out_dir = Path(out_dir).absolute()
    checkpoint = latest_checkpoint(out_dir)
    if resume and checkpoint is None:
        raise BadInput(f"--resume: no checkpoint in {out_dir / 'checkpoints'}")
    if not resume and checkpoint is not None:
        raise BadInput(f"{out_dir} holds checkpoints of an earlier run: pass --resume, or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = _make_accelerator(config, out_dir)
    main = accelerator.is_main_process
    notify = report if (report is not None and main) else (lambda *args: None)
    if main:
        (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=1))

    # 1. Data: simulated brackets, optionally replaced by their cached latents
    dataset = BracketDataset(
        find_hdr_files(data_dir), config.views, config.views_per_image, config.seed, config.image_cache
    )
    recipe.setup(accelerator, config)
    data: torch.utils.data.Dataset = dataset
    if config.latent_cache:
        cache = LatentCache(config.latent_cache, dataset, recipe.cache_key(), recipe.cache_with_hdr)
        cache.fill(recipe.encode, accelerator, config.batch_size, lambda i, n: notify("cache", i, n, {}))
        data = cache
    if len(data) < config.batch_size * accelerator.num_processes:
        raise BadInput(f"{len(data)} samples are fewer than one batch on every process; add views_per_image")
    validation = _collate([data[i] for i in range(min(config.validation_samples, len(data)))])
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        collate_fn=_collate,
    )
    loader = accelerator.prepare(loader)

    # 2. State that checkpoints carry besides models and optimizers: the step, the EMA
    step = _Step()
    accelerator.register_for_checkpointing(step)
    ema = None
    if config.ema_decay is not None:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(recipe.trainable(), decay=config.ema_decay, use_ema_warmup=True)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    log = _Log(out_dir / "loss.jsonl", accelerator)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        if main:
            _truncate_log(log.path, step.value)
    elif main:
        log.path.unlink(missing_ok=True)

    # 3. The loop: epochs of shuffled batches; a resumed run skips the batches already seen
    started = time.perf_counter()
    batches_done = step.value * config.gradient_accumulation_steps
    epoch, skip = divmod(batches_done, len(loader))
    while step.value < config.steps:
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        skip = 0
        for batch in batches:
            generator = _generator(accelerator, config.seed, batches_done)
            batches_done += 1
            with accelerator.accumulate(*recipe.modules()):
                log.add(recipe.train_step(batch, step.value, generator))
            if not accelerator.sync_gradients:
                continue
            step.value += 1
            if ema is not None:
                ema.step(recipe.trainable())
            entry = log.flush(step.value, {"lr": config.learning_rate, "seconds": time.perf_counter() - started})
            if step.value % config.log_every == 0 or step.value == config.steps:
                notify("train", step.value, config.steps, entry)
            if step.value % config.checkpoint_every == 0 or step.value == config.steps:
                _save_checkpoint(accelerator, out_dir, step.value, config.keep_checkpoints)
            if main and config.validate_every and step.value % config.validate_every == 0:
                _validate(recipe, validation, out_dir, step.value, log)
            if step.value >= config.steps:
                break
        epoch += 1

    # 4. Export the (EMA) weights in the official layout
    accelerator.wait_for_everyone()
    export = out_dir / "export"
    if main:
        if ema is not None:
            ema.store(recipe.trainable())
            ema.copy_to(recipe.trainable())
        recipe.export(export)
        if ema is not None:
            ema.restore(recipe.trainable())
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(step.value, export, log.path, main)
