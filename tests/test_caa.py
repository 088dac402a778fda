"""Correspondence geometry of the view ring and the CAA blocks on a tiny diffusers UNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from lediff_backend.hdr.projection import direction_to_uv, perspective_directions
from lediff_backend.models import correspondence as geo
from lediff_backend.models.caa import MultiViewCAA, PositionalEncoding, ViewGeometry

SIZE = 64  # view pixels; the tiny UNet's latent is 8x8


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=4,
        sample_size=8,
    ).eval()


def _pixel(direction: np.ndarray, yaw: float, fov: float = 90.0, size: int = SIZE) -> np.ndarray:
    """Where a world direction lands in a view: x, y = K Rᵀ d (divided by depth)."""
    camera = geo.rotation(yaw).T @ direction
    assert camera[2] > 0
    return (geo.intrinsics(size, size, fov) @ (camera / camera[2]))[:2]


class TestGeometry:
    def test_ring_turns_right_from_the_panorama_centre(self):
        yaws = geo.ring_yaws()
        assert yaws.tolist() == [-45.0 * i for i in range(8)]
        u, _ = direction_to_uv(np.array([geo.rotation(y)[:, 2] for y in yaws[:3]]))
        np.testing.assert_allclose(u, [0.5, 0.625, 0.75], atol=1e-12)  # each view right of the last

    @pytest.mark.parametrize("yaw, pitch", [(0, 0), (-45, 0), (30, 20), (-135, -60)])
    def test_rays_match_hdr_projection(self, yaw, pitch):
        height, width = 48, 64
        k_inv = np.linalg.inv(geo.intrinsics(height, width, 90.0))
        ys, xs = np.mgrid[0:height, 0:width]
        rays = np.stack([xs, ys, np.ones_like(xs)], axis=-1) @ k_inv.T @ geo.rotation(yaw, pitch).T
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        np.testing.assert_allclose(rays, perspective_directions(width, height, 90.0, yaw, pitch), atol=1e-6)

    def test_a_direction_seen_by_two_views_maps_to_matching_pixels(self):
        rng = np.random.default_rng(0)
        k = geo.intrinsics(SIZE, SIZE, 90.0)
        for _ in range(20):
            azimuth = rng.uniform(-44.0, -1.0)  # between the axes of views 0 and 1
            elevation = rng.uniform(-30.0, 30.0)
            a, e = np.radians([azimuth, elevation])
            direction = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
            in_0, in_1 = _pixel(direction, 0.0), _pixel(direction, -45.0)
            matrix = geo.homography(k, geo.rotation(0.0), k, geo.rotation(-45.0))
            mapped, front = geo.apply_homography(matrix, in_0)
            assert front and np.allclose(mapped, in_1, atol=1e-9)

    def test_points_behind_the_target_are_flagged(self):
        k = geo.intrinsics(SIZE, SIZE, 90.0)
        matrix = geo.homography(k, geo.rotation(0.0), k, geo.rotation(180.0))
        _, front = geo.apply_homography(matrix, np.array([[31.5, 31.5]]))
        assert not front[0]

    def test_neighbour_samples(self):
        k = geo.intrinsics(SIZE, SIZE, 90.0)
        matrix = geo.homography(k, geo.rotation(0.0), k, geo.rotation(-45.0))
        samples = geo.neighbour_samples(matrix, (SIZE, SIZE), (8, 8))
        assert samples.grid.shape == (8, 8, 9, 2) and samples.valid.shape == (8, 8, 9)
        centre = samples.valid[:, :, 4]
        assert centre[:, 5:].all() and not centre[:, :4].any()  # view 1 sees the right half of view 0
        # The centre sample is the query cell's own point: zero offset; its neighbours ~one cell away.
        np.testing.assert_allclose(samples.offsets[:, 5:, 4], 0.0, atol=1e-5)
        sides = [1, 3, 5, 7]
        steps = np.linalg.norm(samples.offsets[:, :, sides], axis=-1)[samples.valid[:, :, sides]]
        assert steps.min() > 0.5 and steps.max() < 2.6
        # The grid is the projected cell centre in key feature cells: check one against the geometry.
        # Cell (3, 6) is centred on pixel (x, y) = (51.5, 27.5).
        direction = perspective_directions(SIZE, SIZE, 90.0)[27:29, 51:53].mean(axis=(0, 1))
        expected = (_pixel(direction / np.linalg.norm(direction), -45.0) + 0.5) / 8 - 0.5
        np.testing.assert_allclose(samples.grid[3, 6, 4], expected, atol=2e-3)
        assert (samples.offsets[~samples.valid] == 0).all()


class TestPositionalEncoding:
    def test_layout_and_official_frequencies(self):
        pe = PositionalEncoding(3)
        out = pe(torch.tensor([[0.5, -1.0]]))
        f = torch.tensor([1.0, 2.0, 4.0])
        expected = torch.cat([(0.5 * f).sin(), (-1.0 * f).sin(), (0.5 * f).cos(), (-1.0 * f).cos()])
        torch.testing.assert_close(out[0], expected)
        assert PositionalEncoding.frequencies(80)[-1] == 2.0**79  # 320 channels: base 2
        wide = PositionalEncoding.frequencies(160)  # 640 channels: base 5000^(1/64)
        torch.testing.assert_close(wide[64], torch.tensor(5000.0), rtol=1e-4, atol=0)

    def test_half_precision_blocks_keep_float32_frequencies(self):
        pe = PositionalEncoding(80).half()
        assert torch.isfinite(pe(torch.tensor([[0.25, 0.5]], dtype=torch.float16))).all()


class TestMultiViewCAA:
    def test_blocks_sit_where_mvdiffusion_puts_them(self):
        unet = _tiny_unet()
        caa = MultiViewCAA.for_unet(unet)
        caa.attach(unet)
        seen = []
        blocks = {
            "enc0": caa.cp_blocks_encoder[0],
            "enc1": caa.cp_blocks_encoder[1],
            "mid": caa.cp_blocks_mid,
            "dec0": caa.cp_blocks_decoder[0],
            "dec1": caa.cp_blocks_decoder[1],
        }
        for name, block in blocks.items():
            block.register_forward_hook(lambda m, args, out, name=name: seen.append((name, tuple(args[0].shape))))
        with torch.no_grad(), caa.views(ViewGeometry.ring(SIZE)):
            unet(torch.randn(8, 4, 8, 8), 10, encoder_hidden_states=torch.randn(8, 7, 32))
        # After down block 0 (before its downsampler), after the last down block, after the mid
        # block's first resnet, after up block 0 (before its upsampler), after the last up block.
        assert seen == [
            ("enc0", (8, 8, 8, 8)),
            ("enc1", (8, 16, 4, 4)),
            ("mid", (8, 16, 4, 4)),
            ("dec0", (8, 16, 4, 4)),
            ("dec1", (8, 8, 8, 8)),
        ]

    def test_zero_initialised_blocks_are_the_identity(self):
        unet = _tiny_unet()
        caa = MultiViewCAA.for_unet(unet)
        caa.attach(unet)
        x, states = torch.randn(2 * 8, 4, 8, 8), torch.randn(2 * 8, 7, 32)
        with torch.no_grad():
            plain = unet(x, 10, encoder_hidden_states=states).sample
            with caa.views(ViewGeometry.ring(SIZE)):
                joint = unet(x, 10, encoder_hidden_states=states).sample
        torch.testing.assert_close(joint, plain, rtol=0, atol=0)

    def test_trained_blocks_connect_ring_neighbours_only_inside_views(self):
        unet = _tiny_unet()
        caa = MultiViewCAA.for_unet(unet)
        caa.attach(unet)
        caa.attach(unet)  # attaching again replaces the hooks
        generator = torch.Generator().manual_seed(1)
        for p in caa.parameters():
            p.data.normal_(0.0, 0.3, generator=generator)
        x, states = torch.randn(8, 4, 8, 8), torch.randn(8, 7, 32)
        poked = x.clone()
        poked[0] += 1.0
        with torch.no_grad():
            plain = unet(x, 10, encoder_hidden_states=states).sample  # outside views(): stock UNet
            with caa.views(ViewGeometry.ring(SIZE)):
                joint = unet(x, 10, encoder_hidden_states=states).sample
                changed = unet(poked, 10, encoder_hidden_states=states).sample
        assert not torch.allclose(joint, plain)
        difference = (changed - joint).abs().flatten(1).amax(1)
        assert difference[1] > 1e-3 and difference[7] > 1e-3  # view 0's neighbours feel it
        assert torch.isfinite(joint).all()

    def test_channel_count_must_divide_by_four(self):
        with pytest.raises(ValueError, match="divisible by 4"):
            MultiViewCAA(encoder_channels=[6], mid_channels=8, decoder_channels=[8])
