"""Tiny random-init model folders: official layouts, seeded, offline tokenizer, CLI, CPU benchmark."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lediff_backend import weights
from lediff_backend.cli import main
from lediff_backend.testing.tiny import write_tiny_models, write_tokenizer

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_FILES = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_official_layouts(tiny_root):
    assert _files(tiny_root / "lediff-highlight") == sorted(OFFICIAL_FILES + ["vae/merge_model.pth"])
    assert _files(tiny_root / "lediff-shadow") == _files(tiny_root / "lediff-highlight")
    assert _files(tiny_root / "sd-base") == OFFICIAL_FILES
    for name, channels in (("lediff-highlight", 8), ("lediff-shadow", 8), ("sd-base", 4)):
        assert json.loads((tiny_root / name / "unet/config.json").read_text())["in_channels"] == channels
    fusion = torch.load(tiny_root / "lediff-highlight/vae/merge_model.pth", weights_only=True)
    assert {k: tuple(v.shape) for k, v in fusion.items()} == {
        "weight_conv.weight": (4, 1, 1, 1),
        "weight_conv.bias": (4,),
    }
    assert weights.find_lediff_folders(tiny_root).shadow is not None
    assert weights.find_base_sd(model_dir=tiny_root) == tiny_root / "sd-base"


def test_seeded_weights(tiny_root, tmp_path):
    again = write_tiny_models(tmp_path / "again")
    other = write_tiny_models(tmp_path / "other", seed=1)
    unet = "unet/diffusion_pytorch_model.safetensors"
    first, second = load_file(tiny_root / "lediff-highlight" / unet), load_file(again["lediff-highlight"] / unet)
    assert all(torch.equal(first[k], second[k]) for k in first)
    third = load_file(other["lediff-highlight"] / unet)
    assert not all(torch.equal(first[k], third[k]) for k in first)
    shadow = load_file(tiny_root / "lediff-shadow" / unet)
    assert not all(torch.equal(first[k], shadow[k]) for k in first)


def test_tokenizer_works_offline(tmp_path):
    from transformers import CLIPTokenizer

    size = write_tokenizer(tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    assert len(tokenizer) == size and tokenizer.model_max_length == 77
    ids = tokenizer("A sunset over the beach!").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.convert_tokens_to_ids("sunset</w>") in ids  # merges give whole words
    assert max(ids) < size


def test_cli_writes_a_root(tmp_path, capsys):
    assert main(["tiny-models", str(tmp_path / "root")]) == 0
    assert "lediff-highlight" in capsys.readouterr().out
    assert weights.lediff_available(tmp_path / "root")


def test_cpu_benchmark_run(capsys, monkeypatch):
    """bench/gpu.py on tiny models on the CPU: the JSON it prints is complete."""
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--tiny", "--device", "cpu", "--steps", "2", "--sizes", "64x64,128x64"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "bench" / "gpu.py"), run_name="__main__")
    assert done.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gpu"] is False and report["denoisers"] == "highlight+shadow"
    assert [r["size"] for r in report["runs"]] == ["64x64", "128x64"]
    assert all(r["finite"] and r["denoising_steps"] == 6 for r in report["runs"])  # 2 loops of (2 + 1) PNDM steps
    assert report["runs"][1]["panorama"] is True


def test_benchmark_without_gpu_says_so(capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setattr(sys, "argv", ["gpu.py"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "bench" / "gpu.py"), run_name="__main__")
    assert done.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gpu"] is False and "no CUDA GPU" in report["message"]
