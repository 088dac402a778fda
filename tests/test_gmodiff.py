"""GMODiff: the official file layouts (strict loading), the pipeline and the ``gmodiff`` merge engine
on the tiny random-init model of ``tiny_root``, and the training recipes.

Tiny random weights make no useful HDR; these tests check what does not depend on training:
shapes, sizes, determinism, the gain-map arithmetic, progress, cancel, errors, and that the
files load through the code that loads the released ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lediff_backend import cli
from lediff_backend.errors import BadInput, Cancelled, MissingWeights
from lediff_backend.gmodiff_weights import CheckpointError, find_gmodiff, load_dareg
from lediff_backend.hdr.exr import read_exr
from lediff_backend.hdr.ldr import write_png
from lediff_backend.jobs import JobRunner
from lediff_backend.merge import merge_files
from lediff_backend.models.gmodiff import DaReg, gain_map, hdr_from_gain_map
from lediff_backend.pipelines.gmodiff import merge_bracket
from lediff_backend.protocol import Job
from lediff_backend.testing.tiny_gmodiff import TINY_DAREG

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVS = [-2.0, 0.0, 2.0]


def bracket(height: int, width: int, evs=EVS, seed: int = 0) -> list[np.ndarray]:
    """Display-encoded exposures of one random scene (gamma 2.2, clipped)."""
    scene = np.random.default_rng(seed).uniform(0.0, 1.0, (height, width, 3)).astype(np.float32)
    return [np.clip(scene * np.float32(2.0**ev), 0, 1) ** np.float32(1 / 2.2) for ev in evs]


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("gmodiff-brackets")
    paths = [folder / f"b{i}.png" for i in range(3)]
    for path, image in zip(paths, bracket(37, 45)):
        write_png(path, image)
    return paths


def test_gain_map_is_the_official_formula_and_inverts():
    hdr = torch.tensor([0.0, 0.01, 0.3, 0.9])
    ldr = torch.tensor([0.0, 0.5, 0.5, 1.0])
    official = torch.log1p(100 * hdr / (ldr + 1 / 64)) / np.log1p(100)
    torch.testing.assert_close(gain_map(hdr, ldr), official)
    torch.testing.assert_close(hdr_from_gain_map(gain_map(hdr, ldr), ldr), hdr, rtol=1e-5, atol=1e-7)


class TestOfficialLayout:
    def test_official_size_and_names(self):
        with torch.device("meta"):
            state = DaReg().state_dict()
        assert len(state) == 532  # the official NAFNet() with its mask head, counted with its own code
        assert state["downs.3.0.weight"].shape == (1024, 512, 4, 4)
        assert state["ups.0.0.weight"].shape == (512 * 16, 1024, 1, 1)
        assert state["seg_conv_layers.0.weight"].shape == (32, 64, 3, 3)

    def test_prefixed_training_checkpoint_loads(self, tiny_root):
        path = tiny_root / "gmodiff/model_zoo/dareg_mask.pth"
        saved = torch.load(path, weights_only=True)
        assert all(k.startswith("module.") for k in saved["state_dict"])
        model = load_dareg(path)
        assert model.config == TINY_DAREG and not model.training
        torch.testing.assert_close(model.intro_0.weight, saved["state_dict"]["module.intro_0.weight"])

    def test_wrong_dareg_key_fails_clearly(self, tiny_root, tmp_path):
        saved = torch.load(tiny_root / "gmodiff/model_zoo/dareg_mask.pth", weights_only=True)
        state = saved["state_dict"]
        state["module.outconv.kernel"] = state.pop("module.outconv.weight")
        torch.save(saved, tmp_path / "dareg_mask.pth")
        with pytest.raises(CheckpointError, match=r"(?s)not the official DaReg.*1 missing keys: outconv\.weight"
                                                  r".*1 unknown keys: outconv\.kernel"):
            load_dareg(tmp_path / "dareg_mask.pth")

    @pytest.mark.parametrize("damage, message", [
        (lambda c: c["state_dict_vae"].pop("decoder.skip_conv_2.conv1.base_layer.weight"),
         r"state_dict_vae\).*1 missing keys: decoder\.skip_conv_2\.conv1\.base_layer\.weight"),
        (lambda c: c["unet_lora_others_modules"].append("mid_block.no_such_layer"),
         r"unet_lora_others_modules names a layer .*mid_block\.no_such_layer"),
        (lambda c: c.pop("rank_vae"), r"entries: rank_vae \(missing\)"),
        (lambda c: c["proj"].update({"mlp.0.bias": torch.zeros(3)}), r"proj\).*1 wrong shapes: mlp\.0\.bias \(3,\)"),
    ])
    def test_wrong_gmodiff_checkpoint_fails_clearly(self, tiny_root, tmp_path, damage, message):
        from lediff_backend.pipelines.gmodiff import GMODiffPipeline

        folder = tmp_path / "gmodiff"
        shutil.copytree(tiny_root / "gmodiff", folder)
        checkpoint = torch.load(folder / "model_zoo/gmodiff.pkl", weights_only=True)
        damage(checkpoint)
        torch.save(checkpoint, folder / "model_zoo/gmodiff.pkl")
        with pytest.raises(CheckpointError, match=rf"(?s)gmodiff\.pkl: not the official .*{message}"):
            GMODiffPipeline.from_pretrained(folder, base_model_dir=tiny_root / "sd21-base")

    def test_missing_weights_say_what_to_place_where(self, tiny_root, tmp_path):
        with pytest.raises(MissingWeights, match=r"(?s)no GMODiff .*pan\.baidu\.com.*gmodiff/model_zoo/dareg_mask\.pth"
                                                 r".*gmodiff/model_zoo/gmodiff\.pkl.*sd21-base"):
            find_gmodiff(tmp_path)
        (tmp_path / "gmodiff/model_zoo").mkdir(parents=True)
        shutil.copy(tiny_root / "gmodiff/model_zoo/gmodiff.pkl", tmp_path / "gmodiff/model_zoo")
        with pytest.raises(MissingWeights, match=r"(?s)incomplete:\n  .*dareg_mask\.pth: missing"):
            find_gmodiff(tmp_path)

    def test_own_folder_finds_the_base_beside_it(self, tiny_root):
        files = find_gmodiff(tiny_root / "gmodiff")
        assert files.folder == tiny_root / "gmodiff" and files.base == tiny_root / "sd21-base"

    def test_models_list_shows_gmodiff(self, tiny_root, capsys):
        assert cli.main(["models", "list", "--model-dir", str(tiny_root)]) == 0
        listing = capsys.readouterr().out
        assert "gmodiff            ok" in listing and "pan.baidu.com" in listing
        assert "sd21-base          ok" in listing


class TestEngine:
    def run(self, tiny_root, images, **kwargs):
        return merge_bracket(images, EVS, reference=1, model_dir=tiny_root, device="cpu", **kwargs)

    def test_odd_sizes_come_back_whole_and_finite(self, tiny_root):
        for height, width in ((37, 45), (64, 100)):
            hdr = self.run(tiny_root, bracket(height, width))
            assert hdr.shape == (height, width, 3) and hdr.dtype == np.float32
            assert np.isfinite(hdr).all() and hdr.min() >= 0
            # the gain is at most 1 in the darkest exposure's units: 4x the reference's (L + 1/64)
            assert hdr.max() <= 4 * (1 + 1 / 64) + 1e-5

    def test_seed_decides(self, tiny_root):
        images = bracket(32, 48)
        first, again, other = (self.run(tiny_root, images, seed=s) for s in (3, 3, 4))
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other)

    def test_progress_and_cancel(self, tiny_root):
        events = []
        self.run(tiny_root, bracket(32, 32), progress=lambda *e: events.append(e))
        assert events == [("load", 0, 1), ("load", 1, 1), ("regression", 1, 3), ("denoise", 2, 3), ("decode", 3, 3)]
        seen = []
        with pytest.raises(Cancelled):
            self.run(tiny_root, bracket(32, 32), progress=lambda *e: seen.append(e[0]), should_cancel=lambda: True)
        assert seen[-1] == "regression"

    def test_needs_the_reference_between_two_exposures(self, tiny_root):
        with pytest.raises(BadInput, match="exactly three exposures"):
            merge_bracket(bracket(32, 32)[:2], EVS[:2], reference=1, model_dir=tiny_root)
        with pytest.raises(BadInput, match=r"reference \(image 0, EV -2\) between a darker and a brighter"):
            merge_bracket(bracket(32, 32), EVS, reference=0, model_dir=tiny_root)


class TestMergeService:
    def test_cli_writes_the_exr(self, tiny_root, pngs, tmp_path, capsys):
        output = tmp_path / "out.exr"
        code = cli.main(["merge", *map(str, pngs), "--ev", "-2", "0", "2", "-o", str(output), "--engine", "gmodiff",
                         "--model-dir", str(tiny_root), "--device", "cpu", "--seed", "5"])
        assert code == 0, capsys.readouterr().err
        hdr, header = read_exr(output)
        assert hdr.shape == (37, 45, 3) and np.isfinite(hdr).all()
        assert header["lediff:engine"] == "gmodiff"
        meta = json.loads(capsys.readouterr().out)
        assert meta["merged"] == [0, 1, 2] and meta["seed"] == 5

    def test_five_exposures_merge_the_ends_and_the_reference(self, tiny_root, tmp_path):
        evs = [-4.0, -2.0, 0.0, 2.0, 4.0]
        paths = []
        for i, image in enumerate(bracket(32, 40, evs)):
            paths.append(tmp_path / f"e{i}.png")
            write_png(paths[-1], image)
        meta = merge_files(list(reversed(paths)), tmp_path / "out.exr", evs=evs[::-1], engine="gmodiff",
                           model_dir=tiny_root, device="cpu")
        assert meta["reference"] == 2 and meta["merged"] == [4, 2, 0]
        with pytest.raises(BadInput, match="three exposures .* got 2: shoot a third, or use the classic engine"):
            merge_files(paths[:2], tmp_path / "two.exr", evs=evs[:2], engine="gmodiff", model_dir=tiny_root)
        with pytest.raises(BadInput, match="--response is the classic engine's"):
            merge_files(paths[:3], tmp_path / "r.exr", evs=evs[:3], engine="gmodiff", response="recover")
        with pytest.raises(BadInput, match="choose another --reference"):
            merge_files(paths, tmp_path / "end.exr", evs=evs, engine="gmodiff", reference=4, model_dir=tiny_root)

    def test_server_job_passes_engine_model_dir_and_device(self, tiny_root, pngs, tmp_path):
        runner = JobRunner(model_dir=str(tiny_root), device="cpu")
        job = Job("merge", {"inputs": [str(p) for p in pngs], "ev": EVS, "engine": "gmodiff", "seed": 1},
                  str(tmp_path / "job.exr"))
        stages = []
        meta = runner.run(job, lambda stage, step, total, preview=None: stages.append(stage), lambda: False)
        assert meta["engine"] == "gmodiff" and meta["device"] == "cpu" and meta["seed"] == 1
        assert stages == ["read", "align", "load", "load", "regression", "denoise", "decode", "write"]
        missing = Job("merge", {**job.params, "model_dir": str(tmp_path)}, str(tmp_path / "x.exr"))
        assert runner.failure(_raised(lambda: runner.run(missing, lambda *a, **k: None, lambda: False)))[0] == \
            "missing_weights"


def _raised(call) -> BaseException:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test looks at whatever was raised
        return exc
    raise AssertionError("nothing was raised")


# Training ------------------------------------------------------------------------------------

# Small, fast runs: 16 samples (8 panoramas x 2 views) of 64², no workers, a high learning rate.
FAST = dict(resolution=64, views_per_image=2, num_workers=0, batch_size=4, learning_rate=1e-3, checkpoint_every=1000,
            validate_every=0, log_every=1000, mixed_precision="no")
TINY_NETWORK = dict(channels=[8, 8, 8, 16, 16], encoder_blocks=[1, 1, 1, 1], decoder_blocks=[1, 1, 1, 1],
                    mask_channels=4)


@pytest.fixture(scope="module")
def data_dir(studiolights) -> Path:
    """The folder of the eight studio light panoramas (its only HDR files)."""
    return studiolights["city"].parent


def _losses(log: Path, key: str) -> list[float]:
    return [entry[key] for entry in map(json.loads, log.read_text().splitlines()) if key in entry]


class TestTraining:
    def test_diffusion_stage_learns_and_exports_the_official_layout(self, tiny_root, data_dir, tmp_path):
        from lediff_backend.pipelines.gmodiff import GMODiffPipeline
        from lediff_backend.training.config import load_config
        from lediff_backend.training.gmodiff import GMODiffRecipe
        from lediff_backend.training.loop import train

        # the same 8 views every step (one batch), so the loss falls steadily from a fresh start
        settings = {**FAST, "views_per_image": 1, "batch_size": 8, "learning_rate": 3e-3}
        config, options = load_config("gmodiff", **settings, steps=30, lora_rank=2, prior_dims=[8, 16, 16])
        start = tmp_path / "start/model_zoo"  # DaReg only: the diffusion stage starts fresh
        start.mkdir(parents=True)
        shutil.copy(tiny_root / "gmodiff/model_zoo/dareg_mask.pth", start)
        recipe = GMODiffRecipe(start.parent, tiny_root / "sd21-base", options)
        trained = {n for n, p in recipe.model.named_parameters() if p.requires_grad}
        assert {"unet.conv_in.base_layer.weight", "vae.decoder.skip_conv_4.conv1.base_layer.weight"} <= trained
        assert not any(n.startswith(("unet.", "vae.", "condition_vae.")) and "lora" not in n and "skip_conv_" not in n
                       and not n.startswith("unet.conv_in.") for n in trained)
        result = train(recipe, config, data_dir, tmp_path / "run")
        losses = _losses(result.log, "loss")
        first, last = np.mean(losses[:10]), np.mean(losses[-10:])
        print(f"gmodiff loss: first 10 steps {first:.4f}, last 10 steps {last:.4f}")
        assert last < 0.7 * first
        pipe = GMODiffPipeline.from_pretrained(result.export, base_model_dir=tiny_root / "sd21-base")
        assert pipe(bracket(32, 32), EVS).images.shape == (1, 32, 32, 3)

    def test_regression_stage_then_mask_head_through_the_cli(self, data_dir, tmp_path, capsys):
        settings = tmp_path / "dareg.json"
        settings.write_text(json.dumps({**FAST, "network": TINY_NETWORK, "mask_start": 30}))
        out = tmp_path / "run"
        assert cli.main(["train", "gmodiff-dareg", "--data", str(data_dir), "--out", str(out),
                         "--config", str(settings), "--steps", "36"]) == 0, capsys.readouterr().err
        gain = _losses(out / "loss.jsonl", "gain")
        assert len(gain) == 30 and len(_losses(out / "loss.jsonl", "mask")) == 6
        assert np.mean(gain[-10:]) < 0.85 * np.mean(gain[:10])
        model = load_dareg(out / "export/model_zoo/dareg_mask.pth")
        assert model.config.channels == (8, 8, 8, 16, 16) and model.config.mask_head

    def test_settings_the_recipes_cannot_use(self, tiny_root, data_dir, tmp_path):
        from lediff_backend.training.config import load_config
        from lediff_backend.training.gmodiff import DaRegRecipe, gmodiff_recipe
        from lediff_backend.training.loop import train

        config, options = load_config("gmodiff-dareg", **{**FAST, "resolution": 48}, steps=1, network=TINY_NETWORK)
        with pytest.raises(BadInput, match="resolution must be a multiple of 32"):
            train(DaRegRecipe(None, options), config, data_dir, tmp_path / "a")
        _, options = load_config("gmodiff")
        with pytest.raises(MissingWeights, match="dareg_mask.pth: missing; train it first"):
            gmodiff_recipe("gmodiff", str(tmp_path), str(tiny_root), options)
