"""LF-Diff (models/lfdiff.py, pipelines/lfdiff.py, lfdiff_weights.py, training/lfdiff.py) on tiny
random-init weights (``testing/tiny_lfdiff``), CPU, 16-96 pixel brackets.

Random weights give noise, not HDR: these tests check the units, shapes, ranges, determinism,
tiling, cancel, the folder layout and its strict loading, the engine's errors, and that both
training stages lower their losses and export folders that merge like released weights would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lediff_backend import errors
from lediff_backend.hdr.exposure import simulate_brackets
from lediff_backend.lfdiff_weights import find_lfdiff_folder, load_lfdiff
from lediff_backend.models.lfdiff import (
    LFDiffConfig,
    LPENet,
    build_networks,
    inverse_mu_law,
    mu_law,
    network_inputs,
)
from lediff_backend.pipelines.lfdiff import LFDiffPipeline, merge_bracket
from lediff_backend.testing.tiny_lfdiff import TINY_LFDIFF, write_tiny_lfdiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVS = [-2.0, 0.0, 2.0]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A models root holding only ``lfdiff/``."""
    root = tmp_path_factory.mktemp("models")
    write_tiny_lfdiff(root / "lfdiff", seed=0)
    return root


@pytest.fixture(scope="module")
def pipe(root) -> LFDiffPipeline:
    return LFDiffPipeline.from_pretrained(root / "lfdiff")


@pytest.fixture(scope="module")
def data_dir(studiolights) -> Path:
    """The folder of the eight studio light panoramas (training data)."""
    return studiolights["forest"].parent


def _bracket(height=40, width=56, seed=0) -> list[np.ndarray]:
    """Three exposures of one random scene, darkest first, sRGB-encoded and clipped."""
    scene = np.random.default_rng(seed).random((height, width, 3), dtype=np.float32) * 4.0
    return [e.pixels for e in simulate_brackets(scene, 3)]


def _merge(root, images, evs=EVS, **kwargs) -> np.ndarray:
    return merge_bracket(images, evs, reference=kwargs.pop("reference", 1), model_dir=root, device="cpu", **kwargs)


def _copy(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


class TestUnits:
    def test_mu_law_round_trip_and_range(self):
        hdr = torch.linspace(0, 1, 101)
        tonemapped = mu_law(hdr, 5000.0)
        assert tonemapped[0] == 0 and tonemapped[-1] == pytest.approx(1.0)
        assert torch.allclose(inverse_mu_law(tonemapped, 5000.0), hdr, atol=1e-5)

    def test_inputs_are_ldr_and_gamma_linear_over_time_relative_to_the_darkest(self):
        ldrs = torch.full((1, 3, 3, 2, 2), 0.5)
        x = network_inputs(ldrs, torch.tensor([[-1.0, 1.0, 3.0]]))
        assert x.shape == (1, 3, 6, 2, 2)
        assert torch.equal(x[:, :, :3], ldrs)
        for i, time in enumerate((1.0, 4.0, 16.0)):
            assert torch.allclose(x[0, i, 3:], torch.full((3, 2, 2), 0.5**2.2 / time))

    def test_paper_sizes(self):
        config = LFDiffConfig()
        networks = build_networks(config)
        assert config.multiple == 16
        assert len(networks["dhrnet"].blocks) == 3 and all(len(b.frms) == 3 for b in networks["dhrnet"].blocks)
        z = networks["lpenet"](torch.rand(1, 3, 32, 48))
        assert z.shape == (1, 3, 8, 12) and z.abs().max() < 1  # H/4 x W/4 x 3, bounded

    def test_config_rejects_unknown_keys_and_bad_heads(self):
        with pytest.raises(ValueError, match="wings"):
            LFDiffConfig.from_dict({"wings": 2})
        with pytest.raises(ValueError, match="heads"):
            LFDiffConfig(channels=10, heads=3)
        assert LFDiffConfig.from_dict(TINY_LFDIFF.to_dict()) == TINY_LFDIFF


class TestMerge:
    @pytest.mark.parametrize("size", [(16, 16), (33, 47), (5, 70)])
    def test_any_size_same_shape_finite_non_negative(self, root, size):
        hdr = _merge(root, _bracket(*size))
        assert hdr.shape == (*size, 3) and hdr.dtype == np.float32
        assert np.isfinite(hdr).all() and hdr.min() >= 0

    def test_in_the_reference_units_bounded_by_the_darkest_white(self, root):
        """DHRNet's output is in the darkest exposure's units, at most its white: 2^(0 - -2) = 4 here."""
        hdr = _merge(root, _bracket())
        assert hdr.max() <= 4.0 * (1 + 1e-5)

    def test_any_input_order(self, root):
        images = _bracket()
        shuffled = [images[2], images[0], images[1]]
        together = _merge(root, shuffled, [EVS[2], EVS[0], EVS[1]], reference=2)
        assert np.array_equal(together, _merge(root, images))

    def test_deterministic_by_seed(self, root):
        images = _bracket()
        first, again = _merge(root, images, seed=3), _merge(root, images, seed=3)
        assert np.array_equal(first, again)
        assert not np.array_equal(first, _merge(root, images, seed=4))

    def test_simulated_bracket_of_a_real_panorama(self, root, studiolights):
        from lediff_backend.hdr.imageio import read_image
        from lediff_backend.hdr.projection import resize_equirect

        scene = resize_equirect(read_image(studiolights["forest"]).pixels, 96)
        exposures = simulate_brackets(scene, 3, rng=np.random.default_rng(0))
        hdr = _merge(root, [e.pixels for e in exposures], [e.ev for e in exposures])
        assert hdr.shape == scene.shape and np.isfinite(hdr).all() and hdr.min() >= 0

    def test_progress_then_cancel(self, root):
        seen = []
        _merge(root, _bracket(), progress=lambda *event: seen.append(event))
        steps = TINY_LFDIFF.sampling_steps
        assert seen == [("prior", i, steps + 1) for i in range(1, steps + 1)] + [("reconstruct", steps + 1, steps + 1)]
        seen.clear()
        with pytest.raises(errors.Cancelled):
            _merge(root, _bracket(), progress=lambda *event: seen.append(event), should_cancel=lambda: True)
        assert len(seen) == 1

    @pytest.mark.parametrize(
        "change, message",
        [
            (lambda im, ev: (im[:2], ev[:2]), "exactly three"),
            (lambda im, ev: (im + im[:1], ev + [4.0]), "exactly three"),
            (lambda im, ev: (im, ev[:2]), "one EV per image"),
            (lambda im, ev: ([im[0][:-1], im[1], im[2]], ev), "differ in size"),
            (lambda im, ev: ([im[0][..., :1], im[1][..., :1], im[2][..., :1]], ev), "RGB"),
            (lambda im, ev: ([np.full_like(im[0], np.nan), im[1], im[2]], ev), "NaN"),
            (lambda im, ev: (im, [0.0, 0.0, 2.0]), "different EVs"),
        ],
    )
    def test_bad_brackets(self, root, change, message):
        images, evs = change(_bracket(), list(EVS))
        with pytest.raises(errors.BadInput, match=message):
            _merge(root, images, evs)

    def test_reference_must_be_the_middle_exposure(self, root):
        with pytest.raises(errors.BadInput, match="middle exposure"):
            _merge(root, _bracket(), reference=0)


class TestPipeline:
    def test_tiles_cover_a_large_image(self, pipe):
        seen = []
        pipe.tile_size, pipe.tile_overlap = 32, 16
        try:
            out = pipe(_bracket(70, 90), EVS, callback_on_step_end=lambda p, i, t, x: seen.append((p.stage, t)) or {})
        finally:
            pipe.tile_size, pipe.tile_overlap = 1024, 128
        tiles = 4 * 5  # 80 x 96 padded: row starts 0, 16, 32, 48; column starts 0, 16, 32, 48, 64
        assert out.images.shape == (1, 70, 90, 3) and np.isfinite(out.images).all()
        assert pipe.num_timesteps == TINY_LFDIFF.sampling_steps + tiles
        assert [s for s, t in seen].count("reconstruct") == tiles and all(t is None for s, t in seen[-tiles:])

    def test_latent_output_is_the_prior(self, pipe):
        prior = pipe(_bracket(33, 47), EVS, output_type="latent").images
        assert prior.shape == (1, TINY_LFDIFF.prior_channels, 12, 12)  # padded to 48 x 48, then / 4

    def test_pipeline_takes_darkest_first(self, pipe):
        with pytest.raises(ValueError, match="darkest first"):
            pipe(_bracket(), [2.0, 0.0, -2.0])

    def test_save_and_load_round_trip_exactly(self, pipe, tmp_path):
        pipe.save_pretrained(tmp_path / "again")
        loaded = LFDiffPipeline.from_pretrained(tmp_path / "again")
        assert loaded.config == pipe.config
        for name, module in pipe.components.items():
            theirs = loaded.components[name].state_dict()
            assert all(torch.equal(v, theirs[k]) for k, v in module.state_dict().items())
        images = _bracket()
        first = pipe(images, EVS, generator=torch.Generator().manual_seed(0)).images
        assert np.array_equal(first, loaded(images, EVS, generator=torch.Generator().manual_seed(0)).images)


class TestFolder:
    def test_found_in_a_root_or_as_itself(self, root):
        assert find_lfdiff_folder(root) == find_lfdiff_folder(root / "lfdiff") == root / "lfdiff"

    def test_models_list_and_download(self, root, tmp_path):
        from lediff_backend import weights

        assert weights.model_status("lfdiff", root) == (root / "lfdiff", "ok")
        assert weights.model_status("lfdiff", tmp_path) == (None, "not installed")
        assert weights.download_model("lfdiff", root) == root / "lfdiff"
        with pytest.raises(errors.MissingWeights, match="lediff train lfdiff-stage1"):
            weights.download_model("lfdiff", tmp_path)
        broken = _copy(root / "lfdiff", tmp_path / "lfdiff")
        (broken / "condition.safetensors").unlink()
        problem = f"{broken / 'condition.safetensors'}: missing (or condition.pth)"
        assert weights.model_status("lfdiff", tmp_path) == (broken, problem)

    def test_checking_a_folder_imports_no_torch(self, root):
        import subprocess
        import sys

        code = (
            "import sys; from lediff_backend.lfdiff_weights import check_lfdiff_folder as check;"
            f" check({str(root / 'lfdiff')!r}); sys.exit('torch' in sys.modules)"
        )
        assert subprocess.run([sys.executable, "-c", code]).returncode == 0

    def test_missing_folder_says_how_to_make_one(self, tmp_path):
        with pytest.raises(errors.MissingWeights, match="folder missing") as caught:
            _merge(tmp_path, _bracket())
        assert "lediff train lfdiff-stage1" in str(caught.value) and str(tmp_path / "lfdiff") in str(caught.value)

    def test_missing_network_is_named(self, root, tmp_path):
        folder = _copy(root / "lfdiff", tmp_path / "lfdiff")
        (folder / "dhrnet.safetensors").unlink()
        with pytest.raises(errors.MissingWeights, match="dhrnet.safetensors: missing"):
            _merge(tmp_path, _bracket())

    def test_lpenet_is_optional(self, root, tmp_path):
        folder = _copy(root / "lfdiff", tmp_path / "lfdiff")
        (folder / "lpenet.safetensors").unlink()
        assert LFDiffPipeline.from_pretrained(folder).lpenet is None
        assert _merge(tmp_path, _bracket()).shape == (40, 56, 3)

    @pytest.mark.parametrize(
        "edit, message",
        [
            (lambda c: {**c, "_class_name": "Other"}, "not an LF-Diff config"),
            (lambda c: {**c, "format": 2}, "format 2"),
            (lambda c: {**c, "wings": 2}, "wings"),
        ],
    )
    def test_bad_config(self, root, tmp_path, edit, message):
        folder = _copy(root / "lfdiff", tmp_path / "lfdiff")
        config = folder / "config.json"
        config.write_text(json.dumps(edit(json.loads(config.read_text()))))
        with pytest.raises(errors.MissingWeights, match=message):
            LFDiffPipeline.from_pretrained(folder)

    def test_strict_keys_and_shapes(self, root, tmp_path):
        folder = _copy(root / "lfdiff", tmp_path / "lfdiff")
        state = load_file(folder / "dhrnet.safetensors")
        state.pop("conv_out.bias")
        state["extra.weight"] = torch.zeros(1)
        state["conv_out.weight"] = torch.zeros(3, 9, 3, 3)
        save_file(state, folder / "dhrnet.safetensors")
        with pytest.raises(errors.MissingWeights) as caught:
            LFDiffPipeline.from_pretrained(folder)
        message = str(caught.value)
        assert "1 missing: conv_out.bias" in message and "1 unexpected: extra.weight" in message
        assert "conv_out.weight (3, 9, 3, 3) (expected (3, 8, 3, 3))" in message

    def test_weights_of_another_size_are_refused(self, root, tmp_path):
        folder = _copy(root / "lfdiff", tmp_path / "lfdiff")
        save_file(LPENet(LFDiffConfig()).state_dict(), folder / "lpenet.safetensors")
        with pytest.raises(errors.MissingWeights, match="lpenet weights that .*config.json describes"):
            LFDiffPipeline.from_pretrained(folder)

    def test_pth_state_dicts_load_weights_only(self, root, tmp_path):
        folder = _copy(root / "lfdiff", tmp_path / "lfdiff")
        state = load_file(folder / "denoiser.safetensors")
        torch.save(state, folder / "denoiser.pth")
        (folder / "denoiser.safetensors").unlink()
        _, networks = load_lfdiff(folder)
        assert all(torch.equal(v, networks["denoiser"].state_dict()[k]) for k, v in state.items())
        torch.save({"state": [1, 2]}, folder / "denoiser.pth")
        with pytest.raises(errors.MissingWeights, match="denoiser"):
            load_lfdiff(folder)


class TestTraining:
    FAST = dict(
        resolution=32,
        views_per_image=4,
        num_workers=0,
        batch_size=4,
        learning_rate=3e-3,
        checkpoint_every=1000,
        validate_every=20,
        validation_samples=2,
        log_every=1000,
    )
    STEPS = 40

    def _train(self, recipe: str, base, data_dir: Path, out: Path, **options) -> list[dict]:
        from lediff_backend.training.config import load_config
        from lediff_backend.training.lfdiff import LFDiffRecipe
        from lediff_backend.training.loop import train

        config, recipe_options = load_config(recipe, None, steps=self.STEPS, **self.FAST, **options)
        result = train(LFDiffRecipe(recipe, base, recipe_options), config, data_dir, out)
        assert result.export == out / "export"
        return [json.loads(line) for line in result.log.read_text().splitlines()]

    @staticmethod
    def _falls(log: list[dict], key: str, factor: float) -> None:
        values = [entry[key] for entry in log if key in entry]
        first, last = np.mean(values[:10]), np.mean(values[-10:])
        print(f"{key}: first 10 steps {first:.4f}, last 10 steps {last:.4f}")
        assert last < factor * first

    def test_stage_one_from_scratch(self, data_dir, tmp_path):
        log = self._train("lfdiff-stage1", None, data_dir, tmp_path / "run", network=TINY_LFDIFF.to_dict())
        self._falls(log, "rec", 0.7)
        assert any("val_psnr_mu" in entry for entry in log)
        assert (tmp_path / "run" / "validation" / f"step-{20:08d}.png").is_file()
        exported = LFDiffPipeline.from_pretrained(tmp_path / "run" / "export")
        assert exported.config == TINY_LFDIFF and exported.lpenet is not None
        assert _merge(tmp_path / "run" / "export", _bracket()).shape == (40, 56, 3)

    def test_stage_two_joint(self, root, data_dir, tmp_path):
        log = self._train("lfdiff-stage2", root / "lfdiff", data_dir, tmp_path / "run")
        self._falls(log, "loss", 0.8)
        assert {"eps", "prior", "rec"} <= set(log[0])
        assert _merge(tmp_path / "run" / "export", _bracket()).shape == (40, 56, 3)

    def test_lediff_train_command(self, data_dir, tmp_path, capsys):
        from lediff_backend.cli import main

        config = tmp_path / "config.json"
        config.write_text(json.dumps(dict(self.FAST, validate_every=0, network=TINY_LFDIFF.to_dict())))
        args = ["train", "lfdiff-stage1", "--data", str(data_dir), "--out", str(tmp_path / "run")]
        args += ["--config", str(config)]
        assert main([*args, "--steps", "2"]) == 0
        assert capsys.readouterr().out.strip() == str(tmp_path / "run" / "export")
        assert LFDiffPipeline.from_pretrained(tmp_path / "run" / "export").config == TINY_LFDIFF
        stage2 = ["train", "lfdiff-stage2", "--data", str(data_dir), "--out", str(tmp_path / "run2"), "--steps", "2"]
        assert main(stage2) == 2  # no --model: BadInput
        assert "--model" in capsys.readouterr().err

    def test_stage_two_needs_a_stage_one_model(self):
        from lediff_backend.training.config import load_config
        from lediff_backend.training.lfdiff import LFDiffRecipe

        _, options = load_config("lfdiff-stage2")
        with pytest.raises(errors.BadInput, match="--model"):
            LFDiffRecipe("lfdiff-stage2", None, options)
