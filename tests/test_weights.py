"""Model folders: finding them, naming every missing or wrong file, and the download command."""

from __future__ import annotations

import json
import shutil
import sys
import types
import zipfile
from pathlib import Path

import pytest

from lediff_backend import weights
from lediff_backend.cli import main
from lediff_backend.errors import MissingWeights
from lediff_backend.testing.tiny import ensure_tiny_models


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "tiny-models"
    ensure_tiny_models(root)
    return root


@pytest.fixture(autouse=True)
def _empty_hub_cache(tmp_path, monkeypatch):
    """No test sees the user's Hugging Face cache or the network."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(weights.ENV_VAR, raising=False)


def _copy(tiny_root: Path, tmp_path: Path, name: str = "lediff-highlight") -> Path:
    return Path(shutil.copytree(tiny_root / name, tmp_path / name))


class TestFind:
    def test_root_with_both_models(self, tiny_root):
        found = weights.find_lediff_folders(tiny_root)
        assert found.highlight == tiny_root / "lediff-highlight"
        assert found.shadow == tiny_root / "lediff-shadow"

    def test_a_models_own_folder_is_the_highlight_model(self, tiny_root):
        found = weights.find_lediff_folders(tiny_root / "lediff-highlight")
        assert (found.highlight, found.shadow) == (tiny_root / "lediff-highlight", None)

    def test_explicit_shadow_folder(self, tiny_root):
        found = weights.find_lediff_folders(tiny_root / "lediff-highlight", tiny_root / "lediff-shadow")
        assert found.shadow == tiny_root / "lediff-shadow"

    def test_environment_variable_names_the_root(self, tiny_root, monkeypatch):
        monkeypatch.setenv(weights.ENV_VAR, str(tiny_root))
        assert weights.find_lediff_folders(None).highlight == tiny_root / "lediff-highlight"

    def test_empty_root_says_what_to_place_where(self, tmp_path):
        with pytest.raises(MissingWeights) as caught:
            weights.find_lediff_folders(tmp_path)
        message = str(caught.value)
        assert weights.MODELS["lediff-highlight"].url in message
        assert str(tmp_path / "lediff-highlight" / "vae" / "merge_model.pth") in message

    def test_available(self, tiny_root, tmp_path):
        assert weights.lediff_available(tiny_root)
        assert not weights.lediff_available(tmp_path)

    def test_base_sd_in_root_or_given(self, tiny_root, tmp_path):
        assert weights.find_base_sd(model_dir=tiny_root) == tiny_root / "sd-base"
        assert weights.find_base_sd(tiny_root / "sd-base") == tiny_root / "sd-base"
        assert weights.find_base_sd(tiny_root) == tiny_root / "sd-base"
        with pytest.raises(MissingWeights, match="sd-base"):
            weights.find_base_sd(model_dir=tmp_path)

    def test_base_sd_from_the_hub_cache(self, tiny_root, tmp_path, monkeypatch):
        monkeypatch.setattr(weights, "_hub_snapshot", lambda spec, local_only: tiny_root / "sd-base")
        assert weights.find_base_sd(model_dir=tmp_path) == tiny_root / "sd-base"

    def test_a_lediff_folder_is_not_a_base_model(self, tiny_root):
        with pytest.raises(MissingWeights, match="in_channels is 8, expected 4"):
            weights.find_base_sd(tiny_root / "lediff-highlight")


class TestMissingFiles:
    @pytest.mark.parametrize(
        "relative",
        [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "vae/merge_model.pth",
            "text_encoder/model.safetensors",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "scheduler/scheduler_config.json",
        ],
    )
    def test_each_missing_file_is_named(self, tiny_root, tmp_path, relative):
        folder = _copy(tiny_root, tmp_path)
        (folder / relative).unlink()
        with pytest.raises(MissingWeights) as caught:
            weights.find_lediff_folders(folder)
        assert f"{folder / relative}: missing" in str(caught.value)
        assert "drive.google.com" in str(caught.value)

    def test_all_problems_are_listed_at_once(self, tiny_root, tmp_path):
        folder = _copy(tiny_root, tmp_path)
        shutil.rmtree(folder / "tokenizer")
        (folder / "vae" / "merge_model.pth").unlink()
        message = str(pytest.raises(MissingWeights, weights.check_lediff_folder, folder).value)
        assert "tokenizer/vocab.json" in message and "merge_model.pth" in message

    def test_bin_weights_are_accepted(self, tiny_root, tmp_path):
        folder = _copy(tiny_root, tmp_path)
        weights_file = folder / "unet" / "diffusion_pytorch_model.safetensors"
        weights_file.rename(weights_file.with_suffix(".bin"))
        assert weights.check_lediff_folder(folder) == folder

    def test_four_channel_unet_is_wrong(self, tiny_root, tmp_path):
        folder = _copy(tiny_root, tmp_path)
        config = json.loads((folder / "unet/config.json").read_text())
        config["in_channels"] = 4
        (folder / "unet/config.json").write_text(json.dumps(config))
        with pytest.raises(MissingWeights, match=r"unet/config\.json: in_channels is 4, expected 8"):
            weights.check_lediff_folder(folder)

    def test_broken_json_is_named(self, tiny_root, tmp_path):
        folder = _copy(tiny_root, tmp_path)
        (folder / "scheduler/scheduler_config.json").write_text("{not json")
        with pytest.raises(MissingWeights, match=r"scheduler_config\.json: unreadable JSON"):
            weights.check_lediff_folder(folder)


def _zip_model(folder: Path, archive: Path, inner: str = "LEDiff_highlight_model") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            if path.is_file():
                zf.write(path, f"{inner}/{path.relative_to(folder)}")
    return archive


def _fake_gdown(monkeypatch, source: Path | None):
    """A ``gdown`` that copies ``source`` (a zip) to the output, or fails when ``source`` is None."""

    def download(id, output, quiet):  # noqa: A002 - gdown's own argument name
        if source is None:
            raise ConnectionError("network unreachable")
        shutil.copy(source, output)
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=download))


class TestDownload:
    @pytest.mark.parametrize("name", ["lediff-highlight", "lediff-shadow", "sd-base"])
    def test_offline_says_what_to_place_where(self, tmp_path, name):
        with pytest.raises(MissingWeights) as caught:
            weights.download_model(name, tmp_path, offline=True)
        message = str(caught.value)
        assert str(tmp_path / name) in message and weights.MODELS[name].url in message

    def test_hf_offline_environment_means_offline(self, tmp_path, monkeypatch):
        _fake_gdown(monkeypatch, None)
        with pytest.raises(MissingWeights, match="offline"):
            weights.download_model("lediff-highlight", tmp_path)

    def test_without_gdown(self, tmp_path, monkeypatch):
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setitem(sys.modules, "gdown", None)
        with pytest.raises(MissingWeights, match="pip install gdown"):
            weights.download_model("lediff-highlight", tmp_path)

    def test_network_failure_explains(self, tmp_path, monkeypatch):
        monkeypatch.delenv("HF_HUB_OFFLINE")
        _fake_gdown(monkeypatch, None)
        with pytest.raises(MissingWeights, match="(?s)network unreachable.*place its"):
            weights.download_model("lediff-highlight", tmp_path)
        assert list(tmp_path.iterdir()) == []

    def test_zip_is_verified_unzipped_and_installed(self, tiny_root, tmp_path, monkeypatch):
        monkeypatch.delenv("HF_HUB_OFFLINE")
        _fake_gdown(monkeypatch, _zip_model(tiny_root / "lediff-shadow", tmp_path / "model.zip"))
        stages = []
        root = tmp_path / "models"
        folder = weights.download_model("lediff-shadow", root, progress=lambda *a: stages.append(a[0]))
        assert folder == root / "lediff-shadow"
        assert weights.find_lediff_folders(root).shadow == folder
        assert stages == ["download", "verify", "install"]
        assert sorted(p.name for p in root.iterdir()) == ["lediff-shadow"]

    def test_damaged_zip(self, tmp_path, monkeypatch):
        monkeypatch.delenv("HF_HUB_OFFLINE")
        (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really a zip")
        _fake_gdown(monkeypatch, tmp_path / "bad.zip")
        with pytest.raises(MissingWeights, match="not a zip file"):
            weights.download_model("lediff-highlight", tmp_path / "models")

    def test_zip_without_a_model(self, tmp_path, monkeypatch):
        monkeypatch.delenv("HF_HUB_OFFLINE")
        with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
            zf.writestr("readme.txt", "hello")
        _fake_gdown(monkeypatch, tmp_path / "other.zip")
        with pytest.raises(MissingWeights, match="no unet/config.json inside"):
            weights.download_model("lediff-highlight", tmp_path / "models")
        assert sorted(p.name for p in (tmp_path / "models").iterdir()) == []


class TestModelsCommand:
    def test_list(self, tiny_root, capsys):
        assert main(["models", "list", "--model-dir", str(tiny_root)]) == 0
        out = capsys.readouterr().out
        assert out.count(" ok") == 8  # lediff x2, sd-base, mvdiffusion x2, gmodiff, sd21-base, lfdiff

    def test_list_empty_root(self, tmp_path, capsys):
        assert main(["models", "list", "--model-dir", str(tmp_path)]) == 0
        assert capsys.readouterr().out.count("not installed") >= 3

    def test_download_offline_exit_code_and_message(self, tmp_path, capsys):
        assert main(["models", "download", "lediff-highlight", "--model-dir", str(tmp_path), "--offline"]) == 3
        assert str(tmp_path / "lediff-highlight") in capsys.readouterr().err


def test_weights_and_models_command_import_no_torch():
    import subprocess

    code = "import sys, lediff_backend.weights, lediff_backend.commands.models; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
