"""MVDiffusion on tiny random-init models: stitching, the joint denoising pipeline, weight conversion.

Random weights give noise, not pictures: these tests check geometry, equivalences, shapes,
determinism and the converter's key mapping; image quality needs the official checkpoints.
"""

from __future__ import annotations

import os
import re
import urllib.request

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import load_file

from lediff_backend import weights
from lediff_backend.cli import main
from lediff_backend.errors import MissingWeights
from lediff_backend.hdr.projection import equirect_directions, equirect_to_perspective
from lediff_backend.hdr.stitch import stitch_views, view_weights
from lediff_backend.models.caa import MultiViewCAA, PositionalEncoding
from lediff_backend.models.correspondence import ring_yaws
from lediff_backend.mvdiffusion_weights import CheckpointKeyError, convert_mvdiffusion, read_checkpoint
from lediff_backend.pipelines.hdr_panorama import load_mvdiffusion_pipeline
from lediff_backend.pipelines.mvdiffusion import MVDiffusionPipeline

STEPS = 2
PROMPT = "a sunset over the beach"


pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def text_pipe(tiny_root) -> MVDiffusionPipeline:
    return load_mvdiffusion_pipeline(tiny_root / "mvdiffusion", "cpu")


def _views(pipe, seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    return pipe(PROMPT, generator=generator, **{"num_inference_steps": STEPS, **kwargs})


def _smooth_panorama(height: int, width: int) -> np.ndarray:
    d = equirect_directions(height, width)
    azimuth = np.arctan2(d[..., 1], d[..., 0])
    channels = [0.5 + 0.3 * d[..., 0], 0.5 + 0.2 * np.sin(3 * azimuth) * np.cos(d[..., 2]), 0.5 + 0.4 * d[..., 2]]
    return np.stack(channels, axis=-1).astype(np.float32)


class TestStitch:
    def test_known_views_reproduce_the_known_panorama(self):
        height, width = 128, 256
        truth = _smooth_panorama(height, width)
        yaws = ring_yaws()
        views = [equirect_to_perspective(truth, 64, 64, 90.0, yaw) for yaw in yaws]
        image, coverage = stitch_views(views, yaws, 90.0, height, width)
        latitude = np.degrees(np.arcsin(equirect_directions(height, width)[..., 2]))
        band = np.abs(latitude) < 40
        np.testing.assert_allclose(image[band], truth[band], atol=2e-3)  # two bilinear resamplings
        assert coverage[np.abs(latitude) < 42].min() == 1.0  # the ring sees ±42°...
        assert coverage[np.abs(latitude) > 46].max() == 0.0  # ...and nothing beyond 45°
        assert (image[coverage == 0] == 0).all()

    def test_blending_is_smooth_where_views_meet(self):
        """Views that disagree by a constant blend into a ramp, not a step."""
        yaws = ring_yaws()
        views = [np.full((64, 64, 1), i % 2, np.float32) for i in range(8)]
        image, _ = stitch_views(views, yaws, 90.0, 64, 512)
        row = image[32, :, 0]
        assert np.abs(np.diff(row)).max() < 0.05
        assert row.min() < 0.1 and row.max() > 0.9  # each view dominates around its centre

    def test_view_weights(self):
        weights = view_weights(8, 16)
        assert weights.shape == (8, 16) and weights.min() > 0
        assert weights[3:5, 7:9].min() > 0.9 and weights[0, 0] < 0.01
        np.testing.assert_allclose(weights, weights[::-1, ::-1])


class TestPipeline:
    def test_zero_initialised_caa_equals_plain_sd_on_every_view(self, tiny_root):
        """With identity CAA blocks each view is exactly a Stable Diffusion run from the same noise."""
        pipe = load_mvdiffusion_pipeline(tiny_root / "mvdiffusion", "cpu")
        zero = MVDiffusionPipeline(
            vae=pipe.vae,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            unet=pipe.unet,
            caa=MultiViewCAA.for_unet(pipe.unet),
            scheduler=pipe.scheduler,
        )
        joint = _views(zero, seed=3).images
        plain = StableDiffusionPipeline(
            vae=pipe.vae,
            text_encoder=pipe.text_encoder,
            tokenizer=pipe.tokenizer,
            unet=pipe.unet,
            scheduler=DDIMScheduler.from_config(pipe.scheduler.config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        plain.set_progress_bar_config(disable=True)
        noise = randn_tensor((8, 4, 8, 8), generator=torch.Generator().manual_seed(3))
        for i in range(8):
            view = plain(
                PROMPT,
                height=64,
                width=64,
                latents=noise[i : i + 1],
                num_inference_steps=STEPS,
                guidance_scale=9.0,
                output_type="np",
            ).images[0]
            np.testing.assert_allclose(joint[i], view, atol=1e-5)

    def test_views_interact_and_runs_are_deterministic(self, text_pipe):
        first = _views(text_pipe).images
        assert first.shape == (8, 64, 64, 3) and first.dtype == np.float32
        assert 0.0 <= first.min() and first.max() <= 1.0
        np.testing.assert_array_equal(first, _views(text_pipe).images)
        assert not np.array_equal(first, _views(text_pipe, seed=1).images)
        single = _views(text_pipe, num_views=1).images[0]  # no neighbours: CAA is skipped
        assert not np.allclose(single, first[0], atol=1e-3)  # the ring changed view 0

    def test_defaults_are_the_official_setup(self, text_pipe):
        assert isinstance(text_pipe.scheduler, DDIMScheduler)
        import inspect

        defaults = inspect.signature(MVDiffusionPipeline.__call__).parameters
        assert defaults["guidance_scale"].default == 9.0 and defaults["num_views"].default == 8
        assert defaults["fov_deg"].default == 90.0 and defaults["yaw_step_deg"].default == 45.0
        assert defaults["num_inference_steps"].default == 50
        assert text_pipe.default_view_size == 64  # tiny: 8 latents (SD-2-base: 64 latents, 512 pixels)

    def test_one_prompt_per_view_and_latent_output(self, text_pipe):
        prompts = [f"{PROMPT} {i}" for i in range(8)]
        generator = torch.Generator().manual_seed(0)
        out = text_pipe(prompts, num_inference_steps=1, output_type="latent", generator=generator)
        assert out.images.shape == (8, 4, 8, 8) and torch.isfinite(out.images).all()

    def test_callback_can_interrupt(self, text_pipe):
        seen = []

        def stop(pipe, step, t, tensors):
            seen.append((step, tuple(tensors["latents"].shape)))
            pipe._interrupt = True
            return {}

        out = _views(text_pipe, callback_on_step_end=stop)
        assert out.interrupted and out.images is None and seen == [(0, (8, 4, 8, 8))]

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (dict(prompt=["a", "b"]), "one per view"),
            (dict(image=np.zeros((64, 64, 3), np.float32)), "outpainting variant"),
            (dict(view_size=60), "multiple of 8"),
            (dict(num_inference_steps=0), "at least 1"),
            (dict(output_type="pil"), "output_type"),
        ],
    )
    def test_bad_inputs(self, text_pipe, kwargs, message):
        kwargs = {"prompt": PROMPT, **kwargs}
        with pytest.raises(ValueError, match=message):
            text_pipe(**kwargs)

    def test_outpainting_keeps_view_zero_as_condition(self, tiny_root):
        pipe = load_mvdiffusion_pipeline(tiny_root / "mvdiffusion-outpaint", "cpu")
        assert pipe.inpainting
        photo = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
        known = np.zeros((64, 64), np.float32)
        known[:, 16:48] = 1.0  # a photo narrower than the view
        condition = pipe.prepare_condition(photo, known, 8)
        assert condition.shape == (8, 5, 8, 8)
        mask = condition[:, 0]
        assert (mask[0, :, 2:6] == 0).all() and (mask[0, :, :2] == 1).all()  # view 0: known middle
        assert (mask[1:] == 1).all() and torch.equal(condition[1, 1:], condition[7, 1:])  # others unknown
        views = _views(pipe, image=photo, image_known=known).images
        assert views.shape == (8, 64, 64, 3) and np.isfinite(views).all()
        with pytest.raises(ValueError, match="needs `image`"):
            pipe(PROMPT)


# -- converting the official checkpoint ------------------------------------------------------------

# diffusers 0.16 names of the VAE's attention, as the official checkpoint stores them.
_OLD_VAE_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _official_state_dict(folder) -> dict[str, torch.Tensor]:
    """A state dict named exactly like the official ``PanoGenerator``'s, from a tiny folder."""
    state = {}
    for key, value in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items():
        state[f"mv_base_model.unet.{key}"] = value
    for key, value in load_file(folder / "caa" / "diffusion_pytorch_model.safetensors").items():
        state[f"mv_base_model.{key}"] = value  # cp_blocks_encoder.0.transformer.attn1.to_q.weight ...
    for block in ["cp_blocks_mid"] + [f"cp_blocks_{part}.{i}" for part in ("encoder", "decoder") for i in (0, 1)]:
        channels = state[f"mv_base_model.{block}.transformer.norm1.weight"].shape[0]
        state[f"mv_base_model.{block}.pe.freq_bands"] = PositionalEncoding.frequencies(channels // 4)[None, None]
    for key, value in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        match = re.match(r"(.*\.attentions\.\d+\.)(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", key)
        state["vae." + (f"{match[1]}{_OLD_VAE_NAMES[match[2]]}.{match[3]}" if match else key)] = value
    for key, value in load_file(folder / "text_encoder" / "model.safetensors").items():
        state[f"text_encoder.{key}"] = value
    state["text_encoder.text_model.embeddings.position_ids"] = torch.arange(77)[None]  # transformers 4.28
    return state


class _LightningBookkeeping(dict):
    """Stands for classes like Lightning's AttributeDict that weights_only loading refuses."""


class _CallbackState:
    """Stands for a callback object pickled into the checkpoint."""

    def __init__(self):
        self.best_model_score = torch.tensor(0.5)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def _save_checkpoint(path, state, extras=True):
    checkpoint = {"epoch": 3, "global_step": 100, "pytorch-lightning_version": "1.5.0", "state_dict": state}
    if extras:
        checkpoint["hyper_parameters"] = _LightningBookkeeping(model={"guidance_scale": 9.0})
        checkpoint["callbacks"] = {"ModelCheckpoint": _CallbackState()}
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def official_checkpoint(tiny_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "pano.ckpt"
    return _save_checkpoint(path, _official_state_dict(tiny_root / "mvdiffusion"))


class TestConvertWeights:
    def test_every_key_is_mapped_and_the_result_runs_like_the_original(
        self, tiny_root, official_checkpoint, text_pipe, tmp_path
    ):
        out = convert_mvdiffusion(official_checkpoint, tmp_path / "mvdiffusion", base_dir=tiny_root / "mvdiffusion")
        files = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}
        for component, stem in {**files, "caa": "diffusion_pytorch_model"}.items():
            original = load_file(tiny_root / "mvdiffusion" / component / f"{stem}.safetensors")
            converted = load_file(out / component / f"{stem}.safetensors")
            assert original.keys() == converted.keys(), component
            assert all(torch.equal(original[k], converted[k]) for k in original), component
        converted_pipe = load_mvdiffusion_pipeline(out, "cpu")
        np.testing.assert_array_equal(
            _views(converted_pipe, num_inference_steps=1).images, _views(text_pipe, num_inference_steps=1).images
        )

    def test_reads_the_state_dict_of_a_lightning_checkpoint(self, official_checkpoint):
        state = read_checkpoint(official_checkpoint)
        assert "mv_base_model.cp_blocks_mid.transformer.attn1.to_out.weight" in state
        assert "vae.encoder.mid_block.attentions.0.query.weight" in state

    @pytest.mark.parametrize(
        "change, message",
        [
            (lambda s: s.update({"mv_base_model.extra.weight": torch.zeros(1)}), "1 unknown keys: mv_base_model.extra"),
            (lambda s: s.pop("mv_base_model.cp_blocks_mid.transformer.attn1.to_q.weight"), "missing keys: caa: cp_"),
            (lambda s: s.update({"vae.decoder.conv_out.bias": torch.zeros(7)}), "wrong shapes or values: vae.decoder"),
            (lambda s: s.update({"mv_base_model.cp_blocks_mid.pe.freq_bands": torch.ones(1, 1, 4)}), "positional-enc"),
            (lambda s: [s.pop(k) for k in [k for k in s if k.startswith("text_encoder.")]], "missing keys: text_enc"),
        ],
    )
    def test_refuses_a_checkpoint_that_does_not_match(self, tiny_root, tmp_path, change, message):
        state = _official_state_dict(tiny_root / "mvdiffusion")
        change(state)
        checkpoint = _save_checkpoint(tmp_path / "bad.ckpt", state, extras=False)
        with pytest.raises(CheckpointKeyError, match=message):
            convert_mvdiffusion(checkpoint, tmp_path / "out", base_dir=tiny_root / "mvdiffusion")
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))

    def test_the_outpainting_variant_needs_a_nine_channel_unet(self, tiny_root, official_checkpoint, tmp_path):
        with pytest.raises(CheckpointKeyError, match="conv_in.weight"):
            convert_mvdiffusion(
                official_checkpoint,
                tmp_path / "out",
                variant="mvdiffusion-outpaint",
                base_dir=tiny_root / "mvdiffusion-outpaint",
            )

    def test_pickled_code_never_runs(self, tiny_root, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        torch.save({"state_dict": {}, "callbacks": _RunsCode()}, tmp_path / "evil.ckpt")
        with pytest.raises(MissingWeights, match="cannot be read"):
            convert_mvdiffusion(tmp_path / "evil.ckpt", tmp_path / "out", base_dir=tiny_root / "mvdiffusion")
        assert not (tmp_path / "pwned-by-checkpoint").exists()

    def test_not_a_checkpoint(self, tiny_root, tmp_path):
        (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
        with pytest.raises(MissingWeights, match="cannot be read"):
            convert_mvdiffusion(tmp_path / "junk.ckpt", tmp_path / "out", base_dir=tiny_root / "mvdiffusion")

    def test_download_offline_says_what_to_place_where(self, tmp_path):
        with pytest.raises(MissingWeights) as caught:
            weights.download_model("mvdiffusion", tmp_path, offline=True)
        message = str(caught.value)
        assert weights.MODELS["mvdiffusion"].url in message
        assert f"lediff convert-weights mvdiffusion pano.ckpt {tmp_path / 'mvdiffusion'}" in message

    def test_download_fetches_and_converts(self, tiny_root, official_checkpoint, tmp_path, monkeypatch):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        (tmp_path / "sd2-base").symlink_to(tiny_root / "mvdiffusion")  # an SD-2-shaped diffusers folder
        urls = []

        def urlopen(url, timeout):
            urls.append(url)
            return open(official_checkpoint, "rb")

        monkeypatch.setattr(urllib.request, "urlopen", urlopen)
        folder = weights.download_model("mvdiffusion", tmp_path)
        assert folder == tmp_path / "mvdiffusion" and urls[0].endswith("dl=1")
        assert weights.model_status("mvdiffusion", tmp_path) == (folder, "ok")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mvdiffusion", "sd2-base"]  # no leftovers

    def test_command(self, tiny_root, official_checkpoint, tmp_path, capsys):
        out = tmp_path / "mvdiffusion"
        base = str(tiny_root / "mvdiffusion")
        args = ["convert-weights", "mvdiffusion", str(official_checkpoint), str(out), "--base", base]
        assert main(args) == 0
        assert str(out) in capsys.readouterr().out
        assert main(args) == 3  # the folder exists now: refused, nothing overwritten
        assert "already exists" in capsys.readouterr().err
