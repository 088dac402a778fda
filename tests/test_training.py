"""Training (lediff_backend.training): bracket simulation statistics, the three recipes on tiny
random-init models at 64² with the eight real HDR panoramas, resume, latent cache, export, CLI.

Tiny random models learn nothing useful: the recipe tests check that the loss goes down over a
fixed seed (a higher learning rate than the paper's, so a few hundred steps show it) and that the
exported folders load and run in the LEDiff pipeline exactly like released weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from lediff_backend.cli import main
from lediff_backend.errors import BadInput
from lediff_backend.hdr.color import luminance
from lediff_backend.pipelines.lediff_engine import lediff_itm, load_lediff_pipeline
from lediff_backend.training.config import load_config
from lediff_backend.training.data import BracketDataset, LatentCache, ViewSettings, encode_bracket, find_hdr_files
from lediff_backend.training.decoder import DecoderRecipe
from lediff_backend.training.denoisers import DenoiserRecipe, training_pairs, widen_unet
from lediff_backend.training.loop import train

SIZE = 64
# Small settings for every run: 32 samples (8 panoramas x 4 views), no workers, tiny discriminator.
FAST = dict(
    resolution=SIZE,
    views_per_image=4,
    num_workers=0,
    batch_size=4,
    learning_rate=1e-3,
    checkpoint_every=1000,
    validate_every=0,
    log_every=1000,
)
FIRST_LAST = 25  # losses averaged at each end of a run


pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, studiolights) -> Path:
    """A training folder holding the eight studio light panoramas (links)."""
    folder = tmp_path_factory.mktemp("hdr-data")
    for name, path in studiolights.items():
        (folder / f"{name}.exr").symlink_to(path)
    return folder


def _dataset(data_dir: Path, size: int = SIZE, views: int = 4) -> BracketDataset:
    return BracketDataset(find_hdr_files(data_dir), ViewSettings(size=size), views_per_image=views, seed=0)


def _losses(log: Path, key: str) -> list[float]:
    return [entry[key] for entry in map(json.loads, log.read_text().splitlines()) if key in entry]


def _assert_goes_down(losses: list[float], factor: float) -> None:
    first, last = np.mean(losses[:FIRST_LAST]), np.mean(losses[-FIRST_LAST:])
    print(f"loss: first {FIRST_LAST} steps {first:.4f}, last {FIRST_LAST} steps {last:.4f}")
    assert last < factor * first


class TestBracketSimulation:
    def test_middle_exposure_halfway_in_ev(self, data_dir):
        for i, sample in enumerate(_dataset(data_dir)):
            low, middle, high = sample["evs"].tolist()
            assert low <= middle <= high
            assert middle == pytest.approx((low + high) / 2, abs=1e-5), f"sample {i}"

    def test_crf_parameters_follow_the_papers_distributions(self, data_dir):
        """β ~ N(0.6, 0.1), γ ~ N(0.9, 0.1), one draw per bracket (2000 brackets of 8² views)."""
        crfs = np.stack([s["crf"].numpy() for s in _dataset(data_dir, size=8, views=250)])
        n = len(crfs)
        for values, mean in ((crfs[:, 0], 0.6), (crfs[:, 1], 0.9)):
            assert abs(values.mean() - mean) < 4 * 0.1 / np.sqrt(n)  # 4 standard errors
            assert abs(values.std() - 0.1) < 4 * 0.1 / np.sqrt(2 * n)
            assert stats.kstest(values, "norm", args=(mean, 0.1)).pvalue > 0.01

    def test_clipping_fractions(self, data_dir):
        """The bounds cover the range: I- clips at most 0.01% (99.99th percentile luminance at 1),
        I+ leaves at most 1% below 0.5 (1st percentile lifted to 0.5); clipping grows with EV."""
        for sample in _dataset(data_dir):
            evs = sample["evs"].numpy()
            lum = luminance(np.exp(sample["log_hdr"].numpy().transpose(1, 2, 0)))  # at the middle EV
            one_pixel = 1.0 / lum.size  # np.percentile interpolates between neighbouring pixels
            assert (lum * 2.0 ** (evs[0] - evs[1]) > 1.0).mean() <= 1e-4 + one_pixel
            assert (lum * 2.0 ** (evs[2] - evs[1]) < 0.5).mean() <= 1e-2 + one_pixel
            bracket = sample["bracket"].numpy()
            white = [(b.min(axis=0) >= 1.0).mean() for b in bracket]
            black = [(b.max(axis=0) <= 0.0).mean() for b in bracket]
            assert white[0] <= 1e-4 + one_pixel
            assert white == sorted(white) and black == sorted(black, reverse=True)

    def test_a_sample_depends_only_on_its_index(self, data_dir):
        a, b = _dataset(data_dir), _dataset(data_dir)
        for key in ("bracket", "log_hdr", "evs", "crf"):
            torch.testing.assert_close(a[5][key], b[5][key], rtol=0, atol=0)
        assert not torch.equal(a[5]["bracket"], a[13]["bracket"])


class TestDenoiserPieces:
    def test_widened_unet_starts_as_the_pretrained_one(self, tiny_root):
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(tiny_root / "sd-base", subfolder="unet")
        wide = widen_unet(UNet2DConditionModel.from_pretrained(tiny_root / "sd-base", subfolder="unet"))
        assert wide.config.in_channels == 8 and wide.conv_in.in_channels == 8
        assert torch.count_nonzero(wide.conv_in.weight[:, 4:]) == 0
        generator = torch.Generator().manual_seed(0)
        noisy, condition = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
        states = torch.randn(2, 77, 32, generator=generator)
        with torch.no_grad():
            plain = unet(noisy, 10, encoder_hidden_states=states).sample
            widened = wide(torch.cat([noisy, condition], dim=1), 10, encoder_hidden_states=states).sample
        torch.testing.assert_close(widened, plain, rtol=0, atol=1e-6)

    def test_pairs_as_the_paper_describes(self):
        """Highlight: C0 -> C-, C+ -> C0. Shadow: C0 -> C+, C- -> C0 (condition -> target)."""
        bracket = torch.arange(3.0).view(1, 3, 1, 1, 1).expand(2, 3, 4, 2, 2)  # C- = 0, C0 = 1, C+ = 2
        for kind, expected in (("highlight", ([1, 2], [0, 1])), ("shadow", ([1, 0], [2, 1]))):
            condition, target = training_pairs(bracket, kind)
            assert condition.shape == target.shape == (4, 4, 2, 2)
            assert condition[::2, 0, 0, 0].tolist() == expected[0]
            assert target[::2, 0, 0, 0].tolist() == expected[1]


def _decoder(tiny_root, **overrides):
    config, options = load_config(
        "decoder",
        **{**FAST, "discriminator_channels": 8, "discriminator_layers": 2, "ema_decay": None, **overrides},
    )
    return DecoderRecipe(tiny_root / "sd-base", options), config


def _denoiser(kind, base, cache, decoder=None, **overrides):
    settings = {**FAST, "latent_cache": str(cache), "validation_inference_steps": 2, "ema_decay": 0.99, **overrides}
    config, options = load_config(kind, **settings)
    return DenoiserRecipe(kind, base, options, decoder=decoder), config


@pytest.fixture(scope="module")
def latent_cache(tmp_path_factory) -> Path:
    """One cache folder for every denoiser run on sd-base's encoder (same data, same latents)."""
    return tmp_path_factory.mktemp("latent-cache")


@pytest.fixture(scope="module")
def decoder_run(tiny_root, data_dir, tmp_path_factory):
    """Fusion + decoder from plain SD: 150 steps, the GAN joining at step 75, validation at 150."""
    recipe, config = _decoder(tiny_root, steps=150, gan_start=75, validate_every=150)
    return train(recipe, config, data_dir, tmp_path_factory.mktemp("decoder"))


@pytest.fixture(scope="module")
def highlight_run(tiny_root, data_dir, latent_cache, decoder_run, tmp_path_factory):
    """Highlight denoiser widened from plain SD, exported with the trained decoder."""
    recipe, config = _denoiser("highlight", tiny_root / "sd-base", latent_cache, decoder=decoder_run.export, steps=150)
    return train(recipe, config, data_dir, tmp_path_factory.mktemp("highlight"))


@pytest.fixture(scope="module")
def shadow_run(tiny_root, data_dir, tmp_path_factory):
    """Shadow denoiser continuing from an 8-channel LEDiff folder, with validation images."""
    out = tmp_path_factory.mktemp("shadow")
    recipe, config = _denoiser("shadow", tiny_root / "lediff-shadow", out / "cache", steps=100, validate_every=50)
    return train(recipe, config, data_dir, out)


class TestRecipes:
    def test_decoder_reconstruction_loss_goes_down(self, decoder_run):
        log = decoder_run.log
        assert decoder_run.step == 150 and len(_losses(log, "rec")) == 150
        _assert_goes_down(_losses(log, "rec"), 0.9)
        gan = _losses(log, "gan_d")
        assert len(gan) == 75 and np.isfinite(gan).all() and np.isfinite(_losses(log, "gan_g")).all()
        assert (log.parent / "validation" / "step-00000150.png").is_file()
        assert np.isfinite(_losses(log, "val_rec")).all()

    def test_highlight_loss_goes_down(self, highlight_run):
        assert len(_losses(highlight_run.log, "loss")) == 150
        _assert_goes_down(_losses(highlight_run.log, "loss"), 0.7)

    def test_shadow_loss_goes_down(self, shadow_run):
        assert len(_losses(shadow_run.log, "loss")) == 100
        _assert_goes_down(_losses(shadow_run.log, "loss"), 0.7)
        folder = shadow_run.log.parent / "validation"
        assert sorted(p.name for p in folder.iterdir()) == ["step-00000050.png", "step-00000100.png"]
        assert len(_losses(shadow_run.log, "val_latent_mse")) == 2


class TestResume:
    def test_resume_continues_from_the_saved_step(self, tiny_root, data_dir, latent_cache, tmp_path):
        """3 steps + resume to 6 = 6 steps straight: same losses, every step logged once."""
        straight = tmp_path / "straight"
        recipe, config = _denoiser("highlight", tiny_root / "sd-base", latent_cache, steps=6, checkpoint_every=3)
        reference = _losses(train(recipe, config, data_dir, straight).log, "loss")
        split = tmp_path / "split"
        recipe, config = _denoiser("highlight", tiny_root / "sd-base", latent_cache, steps=3, checkpoint_every=3)
        train(recipe, config, data_dir, split)
        with (split / "loss.jsonl").open("a") as log:  # a crash after the checkpoint: lines to be redone
            log.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")
        recipe, config = _denoiser("highlight", tiny_root / "sd-base", latent_cache, steps=6, checkpoint_every=3)
        result = train(recipe, config, data_dir, split, resume=True)
        assert result.step == 6
        assert [e["step"] for e in map(json.loads, result.log.read_text().splitlines())] == [1, 2, 3, 4, 5, 6]
        np.testing.assert_allclose(_losses(result.log, "loss"), reference, rtol=1e-5)
        assert sorted(p.name for p in (split / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]

    def test_resume_needs_a_checkpoint_and_a_new_run_a_fresh_folder(self, tiny_root, data_dir, latent_cache, tmp_path):
        def run(resume: bool):
            recipe, config = _denoiser("highlight", tiny_root / "sd-base", latent_cache, steps=1)
            return train(recipe, config, data_dir, tmp_path, resume=resume)

        with pytest.raises(BadInput, match="no checkpoint"):
            run(resume=True)
        run(resume=False)
        with pytest.raises(BadInput, match="pass --resume"):
            run(resume=False)


class TestLatentCache:
    def test_cached_latents_are_the_encoded_samples(self, tiny_root, data_dir, latent_cache, highlight_run):
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(tiny_root / "sd-base", subfolder="vae")
        dataset = _dataset(data_dir)
        cache = LatentCache(latent_cache, dataset, key={}, with_hdr=False)
        expected = encode_bracket(vae, dataset[7]["bracket"][None])[0]
        torch.testing.assert_close(cache[7]["latents"], expected, rtol=1e-4, atol=1e-5)
        assert len(list(latent_cache.glob("*.safetensors"))) == len(dataset)


class TestExport:
    def test_exported_folders_run_in_the_lediff_pipeline(self, highlight_run, shadow_run):
        ldr = np.random.default_rng(0).random((SIZE, SIZE, 3), dtype=np.float32)
        ldr[:16] = 1.0  # a clipped band
        hdr = lediff_itm(ldr, model_dir=highlight_run.export, shadow_model_dir=shadow_run.export, steps=2, device="cpu")
        assert hdr.shape == (SIZE, SIZE, 3) and hdr.dtype == np.float32
        assert np.isfinite(hdr).all() and (hdr >= 0).all()

    def test_denoiser_export_carries_the_trained_decoder(self, decoder_run, highlight_run):
        from safetensors.torch import load_file

        pipe = load_lediff_pipeline(highlight_run.export, device="cpu")
        assert pipe.highlight_unet.config.in_channels == 8
        for name in ("vae/diffusion_pytorch_model.safetensors",):
            trained, exported = load_file(decoder_run.export / name), load_file(highlight_run.export / name)
            assert all(torch.equal(trained[k], exported[k]) for k in trained)
        fusion = torch.load(highlight_run.export / "vae/merge_model.pth", weights_only=True)
        assert set(fusion) == {"weight_conv.weight", "weight_conv.bias"}
        torch.testing.assert_close(fusion, torch.load(decoder_run.export / "vae/merge_model.pth", weights_only=True))


class TestCommand:
    def test_lediff_train_and_resume(self, tiny_root, data_dir, tmp_path, capsys):
        config = tmp_path / "small.json"
        config.write_text(json.dumps({**FAST, "ema_decay": None, "validation_inference_steps": 2}))
        out = tmp_path / "run"
        args = ["train", "shadow", "--data", str(data_dir), "--out", str(out), "--model", str(tiny_root / "sd-base")]
        assert main([*args, "--config", str(config), "--steps", "2"]) == 0
        assert main([*args, "--config", str(config), "--steps", "3", "--resume"]) == 0
        assert capsys.readouterr().out.split() == [str(out / "export")] * 2
        assert [e["step"] for e in map(json.loads, (out / "loss.jsonl").read_text().splitlines())] == [1, 2, 3]

    def test_unknown_option_is_a_usage_error(self, data_dir, tmp_path, capsys):
        config = tmp_path / "bad.json"
        config.write_text(json.dumps({"learning_rat": 1e-4}))
        assert main(["train", "decoder", "--data", str(data_dir), "--out", str(tmp_path), "--config", str(config)]) == 2
        assert "learning_rat" in capsys.readouterr().err

    def test_paper_defaults(self):
        decoder, _ = load_config("decoder")
        denoiser, options = load_config("highlight")
        assert (decoder.learning_rate, denoiser.learning_rate) == (1e-4, 1e-5)
        assert (decoder.steps, denoiser.steps) == (200_000, 400_000)
        assert options["prompt"] == ""
