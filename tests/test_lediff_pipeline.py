"""LEDiffPipeline on tiny random-init models in the official layouts (CPU, a few steps).

Random weights give noise, not pictures: these tests check shapes, finiteness, determinism,
the windowed/tiled paths, guidance, cancel and errors; image quality needs the real checkpoints.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lediff_backend import errors
from lediff_backend.pipelines.itm_blend import blend_unclipped, clip_mask, fit_gamma_exposure
from lediff_backend.pipelines.lediff_engine import lediff_itm, lediff_text2hdr, load_lediff_pipeline
from lediff_backend.pipelines.tiling import map_tiles, tile_starts

STEPS = 2  # PNDM runs STEPS + 1 timesteps per loop


pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def highlight(tiny_root):
    """The official configuration: highlight denoiser only."""
    return load_lediff_pipeline(tiny_root / "lediff-highlight", device="cpu")


@pytest.fixture(scope="module")
def full(tiny_root):
    """Highlight + shadow denoisers and the base model for text -> HDR."""
    return load_lediff_pipeline(tiny_root, device="cpu", text2hdr=True)


def _ldr(height=96, width=160, seed=0) -> np.ndarray:
    """A display-encoded test image with a clipped band (highlights) and a black patch (shadows)."""
    rng = np.random.default_rng(seed)
    image = rng.random((height, width, 3), dtype=np.float32) * 0.6 + 0.2
    image[: height // 5] = 1.0
    image[-10:, :20] = 0.0
    return image


def _unet_inputs(pipe, monkeypatch) -> list[tuple[int, ...]]:
    """Record the shape of every input the pipeline's UNets see."""
    shapes: list[tuple[int, ...]] = []
    for unet in pipe._unets():
        original = unet.forward

        def spy(sample, *args, _original=original, **kwargs):
            shapes.append(tuple(sample.shape))
            return _original(sample, *args, **kwargs)

        monkeypatch.setattr(unet, "forward", spy)
    return shapes


class TestITM:
    def test_non_square_image_gives_finite_hdr_of_the_same_size(self, highlight):
        hdr = lediff_itm(_ldr(), pipeline=highlight, steps=STEPS, seed=0)
        assert hdr.shape == (96, 160, 3) and hdr.dtype == np.float32
        assert np.isfinite(hdr).all() and (hdr >= 0).all()

    def test_odd_size_is_padded_and_cropped_back(self, highlight):
        assert lediff_itm(_ldr(50, 70), pipeline=highlight, steps=1, seed=0).shape == (50, 70, 3)

    def test_deterministic_by_seed_and_different_across_seeds(self, highlight):
        first = lediff_itm(_ldr(), pipeline=highlight, steps=STEPS, seed=7)
        again = lediff_itm(_ldr(), pipeline=highlight, steps=STEPS, seed=7)
        other = lediff_itm(_ldr(), pipeline=highlight, steps=STEPS, seed=8)
        np.testing.assert_array_equal(first, again)
        assert np.abs(first - other).max() > 1e-3

    def test_seeded_slice(self, highlight):
        """A 3x3 corner of the log-HDR, as diffusers' tests pin outputs (atol covers BLAS differences)."""
        out = highlight(
            image=_ldr(), num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), blend_input=False
        )
        corner = np.log(out.images[0, -3:, -3:, 0])
        assert np.isfinite(corner).all()
        again = highlight(
            image=_ldr(), num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), blend_input=False
        )
        np.testing.assert_allclose(np.log(again.images[0, -3:, -3:, 0]), corner, atol=1e-2)

    def test_guidance_one_means_no_guidance(self, highlight, monkeypatch):
        shapes = _unet_inputs(highlight, monkeypatch)
        unguided = lediff_itm(_ldr(), pipeline=highlight, steps=STEPS, seed=1, guidance=1.0, prompt="a sunset")
        batch_without = max(s[0] for s in shapes)
        below = lediff_itm(_ldr(), pipeline=highlight, steps=STEPS, seed=1, guidance=0.5, prompt="a sunset")
        np.testing.assert_array_equal(unguided, below)
        shapes.clear()
        guided = lediff_itm(_ldr(), pipeline=highlight, steps=STEPS, seed=1, guidance=4.0, prompt="a sunset")
        assert max(s[0] for s in shapes) == 2 * batch_without  # unconditional + conditional
        assert np.isfinite(guided).all() and np.abs(guided - unguided).max() > 0

    def test_unets_see_noisy_latent_plus_condition_in_windows(self, highlight, monkeypatch):
        shapes = _unet_inputs(highlight, monkeypatch)
        lediff_itm(_ldr(), pipeline=highlight, steps=1, seed=0)
        window = highlight.highlight_unet.config.sample_size
        assert all(s[1] == 8 and s[2:] == (window, window) for s in shapes)
        assert sum(s[0] for s in shapes) > 2 * (1 + 1)  # several windows per step (latent is 12x20)

    def test_both_denoisers(self, full):
        hdr = lediff_itm(_ldr(), pipeline=full, steps=STEPS, seed=0)
        assert hdr.shape == (96, 160, 3) and np.isfinite(hdr).all()

    def test_shadow_only(self, tiny_root, tmp_path):
        (tmp_path / "lediff-shadow").symlink_to(tiny_root / "lediff-shadow")
        pipe = load_lediff_pipeline(tmp_path, device="cpu")
        assert pipe.highlight_unet is None and pipe.shadow_unet is not None
        assert np.isfinite(lediff_itm(_ldr(64, 64), pipeline=pipe, steps=1, seed=0)).all()

    def test_latent_output_is_the_merged_latent(self, highlight):
        out = highlight(image=_ldr(), num_inference_steps=1, output_type="latent")
        assert tuple(out.images.shape) == (1, 4, 12, 20)


class TestPanorama:
    def test_wrap_has_no_seam(self, highlight, monkeypatch):
        """2:1 through the windowed path: the wrap seam scores like interior column pairs.

        Random weights make every column pair noisy, so the score (mean |Δ log luminance| over
        rows) is averaged over seeds and compared with the interior pairs at the same phase of the
        8-pixel latent grid (the seam, 127 -> 0, is a latent boundary too).
        """
        shapes = _unet_inputs(highlight, monkeypatch)
        height, width = 64, 128
        u = (np.arange(width) + 0.5) / width * 2 * np.pi
        v = np.linspace(0, 1, height)[:, None]
        gray = 0.5 + 0.3 * np.sin(u)[None] * np.cos(3 * v) + 0.2 * np.cos(2 * u + 1)[None]
        image = np.repeat(gray[..., None], 3, axis=2).clip(0, 1).astype(np.float32)
        scores = []
        for seed in range(8):
            out = highlight(
                image=image,
                num_inference_steps=1,
                generator=torch.Generator().manual_seed(seed),
                panorama=True,
                blend_input=False,
            )
            assert out.images.shape == (1, height, width, 3) and np.isfinite(out.images).all()
            log = np.log(out.images[0].mean(axis=2))
            wrapped = np.concatenate([log, log[:, :1]], axis=1)
            scores.append(np.abs(np.diff(wrapped, axis=1)).mean(axis=0))  # [width - 1] is the seam
        window = highlight.highlight_unet.config.sample_size
        assert all(s[-1] == window < width // 8 for s in shapes)  # windows, not the whole latent
        score = np.mean(scores, axis=0)
        same_phase = score[7 : width - 1 : 8]
        assert score[width - 1] <= same_phase.max(), (score[width - 1], np.sort(same_phase))

    def test_tiled_vae_path(self, highlight, monkeypatch):
        decodes = []
        original = highlight.vae.decode
        monkeypatch.setattr(highlight.vae, "decode", lambda z, *a, **k: decodes.append(z.shape) or original(z, *a, **k))
        monkeypatch.setattr(highlight, "vae_tile_size", 32)
        monkeypatch.setattr(highlight, "vae_tile_overlap", 16)
        hdr = lediff_itm(_ldr(64, 128), pipeline=highlight, steps=1, seed=0, panorama=True)
        assert hdr.shape == (64, 128, 3) and np.isfinite(hdr).all()
        assert len(decodes) > 4 and all(s[-2:] == (4, 4) for s in decodes)


class TestText2HDR:
    def test_panorama(self, full):
        hdr = lediff_text2hdr(
            "a sunset over the beach", width=128, height=64, pipeline=full, steps=STEPS, seed=0, panorama=True
        )
        assert hdr.shape == (64, 128, 3) and np.isfinite(hdr).all() and (hdr > 0).all()

    def test_needs_the_base_model(self, highlight):
        with pytest.raises(ValueError, match="base_unet"):
            highlight(prompt="a sky", height=64, width=64, num_inference_steps=1)

    def test_size_must_be_multiple_of_8(self, full):
        with pytest.raises(errors.BadInput, match="multiples of 8"):
            lediff_text2hdr("a sky", width=100, height=64, pipeline=full, steps=1)


class TestControl:
    def test_progress_counts_every_step_of_every_loop(self, highlight):
        calls = []
        lediff_itm(_ldr(), pipeline=highlight, steps=STEPS, seed=0, progress=lambda *a: calls.append(a))
        total = 2 * (STEPS + 1)
        assert [c[1] for c in calls[:-1]] == list(range(1, total + 1))
        assert {c[0] for c in calls[:-1]} == {"highlight 1/2", "highlight 2/2"}
        assert calls[-1] == ("done", total, total)

    def test_previews_every_n_steps(self, highlight):
        previews = []
        lediff_itm(_ldr(), pipeline=highlight, steps=STEPS, seed=0, preview_every=2, preview=lambda *a: previews.append(a))
        assert [p[1] for p in previews] == [2, 4, 6]
        assert all(p[2].shape == (12, 20, 3) and p[2].dtype == np.float32 for p in previews)
        assert all(0 <= p[2].min() and p[2].max() <= 1 for p in previews)

    def test_cancel_within_one_step(self, highlight, monkeypatch):
        shapes = _unet_inputs(highlight, monkeypatch)
        polls = []
        with pytest.raises(errors.Cancelled):
            lediff_itm(
                _ldr(), pipeline=highlight, steps=5, seed=0, should_cancel=lambda: polls.append(1) or len(polls) >= 2
            )
        per_step = len(shapes) // 2
        assert len(polls) == 2 and len(shapes) == 2 * per_step

    def test_interrupt_through_the_diffusers_callback(self, highlight):
        def stop(pipe, step, t, tensors):
            assert set(tensors) == {"latents"} and tensors["latents"].shape == (1, 4, 12, 20)
            pipe._interrupt = True
            return {}

        out = highlight(image=_ldr(), num_inference_steps=3, callback_on_step_end=stop)
        assert out.interrupted and out.images is None

    def test_scheduler_is_reset_between_loops(self, highlight):
        """Two loops from the same noise give the same latent: no multistep state leaks across."""
        condition = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        embeds = highlight.encode_prompt(highlight.text_encoder, highlight.tokenizer, "", "", False)

        def loop():
            return highlight._denoise(
                "test",
                highlight.highlight_unet,
                condition,
                embeds,
                condition.shape,
                3,
                1.0,
                torch.Generator().manual_seed(1),
                False,
                8,
                {},
                None,
                [],
            )

        torch.testing.assert_close(loop(), loop(), atol=0, rtol=0)


class TestErrors:
    def test_missing_weights(self, tmp_path):
        with pytest.raises(errors.MissingWeights, match="lediff-highlight"):
            lediff_itm(_ldr(), model_dir=tmp_path, steps=1)

    @pytest.mark.parametrize("bad", [np.zeros((4, 4, 3)), np.zeros((16, 16)), np.full((16, 16, 3), np.nan)])
    def test_bad_input(self, highlight, bad):
        with pytest.raises(errors.BadInput):
            lediff_itm(bad, pipeline=highlight, steps=1)

    def test_check_inputs(self, highlight):
        with pytest.raises(ValueError, match="not both"):
            highlight(image=_ldr(), latents=torch.zeros(1, 4, 8, 8))
        with pytest.raises(ValueError, match="output_type"):
            highlight(image=_ldr(), output_type="pil")


class TestTiling:
    def test_starts_cover_the_axis(self):
        assert tile_starts(20, 8, 2, wrap=False) == [0, 6, 12]
        assert tile_starts(160, 64, 16, wrap=False, align=8) == [0, 48, 96]
        assert len(tile_starts(8, 8, 2, wrap=True)) == 2  # a wrapping axis always gets two tiles

    @pytest.mark.parametrize("wrap", [False, True])
    def test_pointwise_functions_pass_through_exactly(self, wrap):
        x = torch.randn(1, 4, 12, 20)
        torch.testing.assert_close(map_tiles(lambda t: 2 * t, [x], (8, 8), 2, wrap, batch=3), 2 * x)

    def test_wrap_makes_a_zero_padded_filter_circular(self):
        """With wrap, the seam columns match a circular filter; without, the zero padding shows."""
        x = torch.rand(1, 1, 16, 64) + 1.0
        kernel = torch.ones(1, 1, 3, 3) / 9
        blur = lambda t: torch.nn.functional.conv2d(t, kernel, padding=1)  # noqa: E731
        circular = torch.nn.functional.conv2d(
            torch.nn.functional.pad(x, (1, 1, 0, 0), mode="circular"), kernel, padding=(1, 0)
        )
        seam = [0, -1]
        wrapped = map_tiles(blur, [x], (16, 16), 4, wrap=True)[..., seam]
        plain = map_tiles(blur, [x], (16, 16), 4, wrap=False)[..., seam]
        assert (wrapped - circular[..., seam]).abs().max() < 0.2 * (plain - circular[..., seam]).abs().max()


class TestBlend:
    def test_mask_is_soft_and_marks_clipped_pixels(self):
        ldr = torch.tensor([0.5, 0.96, 0.975, 1.0, 0.01]).view(1, 1, 1, 5).repeat(1, 3, 1, 1)
        torch.testing.assert_close(clip_mask(ldr)[0, 0, 0], torch.tensor([0.0, 0.2, 0.5, 1.0, 0.0]))
        assert clip_mask(ldr, shadows=True)[0, 0, 0, 4] == pytest.approx(0.8)

    def test_fit_recovers_gamma_and_exposure(self):
        ldr = torch.rand(1, 3, 16, 16) * 0.9
        hdr = ldr**2.5 * 2.0**1.5
        gamma, exposure = fit_gamma_exposure(ldr, hdr, torch.ones(1, 1, 16, 16, dtype=torch.bool))
        assert gamma == pytest.approx(2.5, abs=1e-6) and exposure == pytest.approx(1.5, abs=1e-5)

    def test_blend_keeps_generated_highlights_and_linearised_input_elsewhere(self):
        ldr = torch.rand(1, 3, 8, 8) * 0.8
        ldr[..., :2, :] = 1.0
        hdr = torch.where(ldr >= 1.0, torch.full_like(ldr, 50.0), ldr**2.4 * 4.0)
        out = blend_unclipped(ldr, hdr)
        torch.testing.assert_close(out, hdr, atol=1e-4, rtol=1e-4)


def test_text2hdr_command_writes_an_exr(tiny_root, tmp_path, capsys):
    from lediff_backend.cli import main
    from lediff_backend.hdr.exr import read_exr

    output = tmp_path / "sky.exr"
    argv = [
        "text2hdr",
        "a sunset",
        "-o",
        str(output),
        "--model-dir",
        str(tiny_root),
        "--width",
        "128",
        "--height",
        "64",
        "--panorama",
        "--steps",
        "1",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    pixels, header = read_exr(output)
    assert pixels.shape == (64, 128, 3) and np.isfinite(pixels).all()
    assert header.get("lediff:engine") == "lediff"
    assert main(["text2hdr", "a sunset", "-o", str(output), "--width", "100", "--height", "64", "--panorama"]) == 2
