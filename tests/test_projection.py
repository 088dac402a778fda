"""Tests for lediff_backend.hdr.projection: orientation, sampling, cameras, cube maps, resizing."""

from __future__ import annotations

import numpy as np
import pytest

from lediff_backend.hdr import projection
from lediff_backend.hdr.projection import (
    CUBE_FACE_ANGLES,
    CUBE_FACES,
    clear_caches,
    cubemap_to_equirect,
    direction_to_uv,
    equirect_directions,
    equirect_to_cubemap,
    equirect_to_perspective,
    fast_sampler,
    perspective_directions,
    perspective_to_equirect,
    resize_equirect,
    sample_equirect,
    solid_angle_weights,
    uv_to_direction,
)

# Lookups of the smooth test map (256 rows, 0.7° per pixel) are off by the bilinear error on
# a linear function of direction (~1e-4), except within half a pixel of a pole, where the
# lookup repeats the top (bottom) row: there colours (d + 1)/2 are off by up to sin(0.35°)/2.
SMOOTH_ATOL = 4e-3


def colour_of(directions: np.ndarray) -> np.ndarray:
    """A smooth map whose colour encodes the direction: RGB = (d + 1) / 2."""
    return ((directions + 1) / 2).astype(np.float32)


@pytest.fixture(scope="module")
def smooth() -> np.ndarray:
    return colour_of(equirect_directions(256, 512))


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return np.random.default_rng(0).random((16, 32, 3), dtype=np.float32)


class TestDirections:
    def test_known_directions(self):
        u, v = direction_to_uv(np.array([[1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float))
        np.testing.assert_allclose(u[:3], [0.5, 0.25, 0.75], atol=1e-12)
        np.testing.assert_allclose(v, [0.5, 0.5, 0.5, 1.0, 0.0], atol=1e-12)

    def test_uv_round_trip(self):
        u, v = np.meshgrid(np.linspace(0.01, 0.99, 37), np.linspace(0.01, 0.99, 19))
        u2, v2 = direction_to_uv(uv_to_direction(u, v))
        np.testing.assert_allclose(u2, u, atol=1e-6)
        np.testing.assert_allclose(v2, v, atol=1e-6)

    def test_direction_round_trip_and_precision(self):
        d = np.random.default_rng(1).normal(size=(1000, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        np.testing.assert_allclose(uv_to_direction(*direction_to_uv(d)), d, atol=1e-6)
        u32, v32 = direction_to_uv(d.astype(np.float32))
        assert u32.dtype == v32.dtype == np.float32
        assert direction_to_uv(d)[0].dtype == np.float64

    def test_pixel_centres(self):
        d = equirect_directions(4, 8)
        np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1, atol=1e-6)
        u, v = direction_to_uv(d)
        np.testing.assert_allclose(u[0], (np.arange(8) + 0.5) / 8, atol=1e-6)
        np.testing.assert_allclose(v[:, 0], 1 - (np.arange(4) + 0.5) / 4, atol=1e-6)

    def test_solid_angles_sum_to_sphere(self):
        for height, width in [(1, 2), (7, 14), (512, 1024)]:
            total = np.broadcast_to(solid_angle_weights(height, width), (height, width)).sum()
            assert total == pytest.approx(4 * np.pi, rel=1e-12)


class TestSampleEquirect:
    def test_exact_at_pixel_centres(self, noise):
        height, width = noise.shape[:2]
        u = (np.arange(width) + 0.5) / width
        v = 1 - (np.arange(height) + 0.5) / height
        np.testing.assert_allclose(sample_equirect(noise, u[None, :], v[:, None]), noise, atol=1e-6)

    def test_wraps_across_the_seam(self, noise):
        row, v = 5, 1 - 5.5 / 16
        seam = sample_equirect(noise, np.array([0.0, 1.0, -1.0, 2.0]), v)
        np.testing.assert_allclose(seam, [(noise[row, 0] + noise[row, -1]) / 2] * 4, atol=1e-6)
        quarter = sample_equirect(noise, np.array([0.25 + 1 / 64, 1.25 + 1 / 64, -0.75 + 1 / 64]), v)
        np.testing.assert_allclose(quarter, [noise[row, 8]] * 3, atol=1e-5)

    def test_linear_between_centres_and_clamped_at_poles(self, noise):
        middle = sample_equirect(noise, 3 / 32, 1 - 2 / 16)  # between (1,2), (1,3), (2,2), (2,3)
        np.testing.assert_allclose(middle, noise[1:3, 2:4].mean(axis=(0, 1)), atol=1e-6)
        np.testing.assert_allclose(sample_equirect(noise, 2.5 / 32, 1.0), noise[0, 2], atol=1e-6)
        np.testing.assert_allclose(sample_equirect(noise, 2.5 / 32, 0.0), noise[-1, 2], atol=1e-6)

    def test_shapes_and_channels(self):
        image = np.random.default_rng(2).random((8, 16, 5)).astype(np.float64)
        out = sample_equirect(image, np.zeros((2, 3, 1)), np.full((4,), 0.5))
        assert out.shape == (2, 3, 4, 5) and out.dtype == np.float32
        assert sample_equirect(image, np.zeros((0,)), np.zeros((0,))).shape == (0, 5)


class TestPerspective:
    @pytest.mark.parametrize(
        ("yaw", "pitch", "forward"),
        [
            (0, 0, [1, 0, 0]),
            (90, 0, [0, 1, 0]),
            (180, 0, [-1, 0, 0]),
            (-90, 0, [0, -1, 0]),
            (0, 90, [0, 0, 1]),
            (45, -90, [0, 0, -1]),
        ],
    )
    def test_centre_looks_forward(self, yaw, pitch, forward):
        d = perspective_directions(5, 3, 60, yaw, pitch, roll_deg=33)
        np.testing.assert_allclose(d[1, 2], forward, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1, atol=1e-6)

    def test_image_axes(self):
        d = perspective_directions(5, 3, 60)
        assert (d[:, -1, 1] < 0).all() and (d[:, 0, 1] > 0).all()  # image right is -Y
        assert (d[0, :, 2] > 0).all() and (d[-1, :, 2] < 0).all()  # row 0 is the top (+Z)

    def test_positive_roll_turns_the_picture_clockwise(self):
        d = perspective_directions(3, 3, 60, roll_deg=90)
        # The camera's up now points to its left (+Y): what was left of the view is at the top.
        assert d[0, 1, 1] > 0.3 and abs(d[0, 1, 2]) < 1e-6
        np.testing.assert_allclose(d[1, 2, 2], d[0, 1, 1], atol=1e-6)  # right edge looks up

    def test_horizontal_fov(self):
        width, fov = 64, 75.0
        d = perspective_directions(width, 16, fov)
        outer = np.degrees(np.arctan2(-d[8, -1, 1], d[8, -1, 0]))
        expected = np.degrees(np.arctan((1 - 1 / width) * np.tan(np.radians(fov / 2))))
        assert outer == pytest.approx(expected, abs=1e-4)

    @pytest.mark.parametrize("angles", [(0, 0, 0), (120, 35, 0), (-60, -20, 40), (10, 80, -25)])
    def test_renders_what_the_camera_sees(self, smooth, angles):
        view = equirect_to_perspective(smooth, 40, 30, 70, *angles)
        expected = colour_of(perspective_directions(40, 30, 70, *angles))
        np.testing.assert_allclose(view, expected, atol=SMOOTH_ATOL)

    @pytest.mark.parametrize("angles", [(0, 0, 0), (150, 30, 20), (-90, -60, -45)])
    def test_round_trip_inside_mask(self, smooth, angles):
        view = equirect_to_perspective(smooth, 160, 120, 80, *angles)
        back, mask = perspective_to_equirect(view, 256, 512, 80, *angles)
        assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
        inside = mask > 0
        np.testing.assert_allclose(back[inside], smooth[inside], atol=SMOOTH_ATOL)
        assert (back[~inside] == 0).all()

    def test_mask_covers_the_view_solid_angle(self):
        _, mask = perspective_to_equirect(np.ones((64, 64, 1), np.float32), 512, 1024, 90, 30, 20, 10)
        covered = (mask * solid_angle_weights(512, 1024)).sum()
        assert covered == pytest.approx(4 * np.pi / 6, rel=0.01)  # a cube face's solid angle
        u, v = direction_to_uv(np.array([-np.cos(np.radians(30)), -np.sin(np.radians(30)), 0.0]))
        assert mask[int((1 - v) * 512), int(u * 1024)] == 0  # straight behind the camera

    def test_rejects_bad_fov(self, smooth):
        with pytest.raises(ValueError):
            equirect_to_perspective(smooth, 8, 8, 180)


class TestCubemap:
    def test_face_order_and_centres(self, smooth):
        faces = equirect_to_cubemap(smooth, 33)
        assert faces.shape == (6, 33, 33, 3) and faces.dtype == np.float32
        axes = {"+X": [1, 0, 0], "-X": [-1, 0, 0], "+Y": [0, 1, 0], "-Y": [0, -1, 0], "+Z": [0, 0, 1], "-Z": [0, 0, -1]}
        for face, name in zip(faces, CUBE_FACES):
            np.testing.assert_allclose(face[16, 16], colour_of(np.array(axes[name])), atol=SMOOTH_ATOL)
        np.testing.assert_allclose(faces[0, 16, 16], sample_equirect(smooth, 0.5, 0.5), atol=1e-6)

    def test_faces_are_the_perspective_views(self):
        image = np.random.default_rng(4).random((48, 96, 2), dtype=np.float32)
        faces = equirect_to_cubemap(image, 20)
        for face, name in zip(faces, CUBE_FACES):
            view = equirect_to_perspective(image, 20, 20, 90.0, *CUBE_FACE_ANGLES[name])
            # Coordinates found by symmetry differ from the direct ones in float32's last bits.
            np.testing.assert_allclose(face, view, atol=1e-4, err_msg=name)

    def test_face_edges_meet(self, smooth):
        """Which edge is up: neighbouring faces share their touching edges."""
        f = dict(zip(CUBE_FACES, equirect_to_cubemap(smooth, 64)))
        pairs = [
            (f["+Z"][-1], f["+X"][0]),  # +Z: up is -X, so its bottom edge meets the top of +X
            (f["-Z"][0], f["+X"][-1]),  # -Z: up is +X
            (f["+Z"][0], f["-X"][0][::-1]),
            (f["+Z"][:, -1], f["-Y"][0][::-1]),  # both have -Y at the right
            (f["+Y"][:, -1], f["+X"][:, 0]),  # side faces: up is +Z, +Y is left of +X
            (f["+X"][:, -1], f["-Y"][:, 0]),
            (f["-Y"][:, -1], f["-X"][:, 0]),
            (f["-X"][:, -1], f["+Y"][:, 0]),
        ]
        for a, b in pairs:
            np.testing.assert_allclose(a, b, atol=0.05)  # one texel apart: ~1.4° of a smooth map

    def test_side_faces_have_z_up(self, smooth):
        faces = equirect_to_cubemap(smooth, 16)
        for face in faces[:4]:
            assert (face[0, :, 2] > face[-1, :, 2]).all()

    def test_round_trip(self, smooth):
        back = cubemap_to_equirect(equirect_to_cubemap(smooth, 128), 128, 256)
        np.testing.assert_allclose(back, colour_of(equirect_directions(128, 256)), atol=SMOOTH_ATOL)

    def test_rejects_wrong_face_count(self):
        with pytest.raises(ValueError):
            cubemap_to_equirect(np.zeros((5, 4, 4, 3), np.float32), 8, 16)


class TestCachedViews:
    """Repeated views reuse their lookup positions; ``fast=True`` hands the lookup to OpenCV."""

    def test_repeated_calls_give_fresh_equal_results(self, noise):
        first = equirect_to_perspective(noise, 12, 10, 70, 30, 10)
        first[:] = -1  # the caller owns its result
        second = equirect_to_perspective(noise, 12, 10, 70, 30, 10)
        np.testing.assert_array_equal(second, equirect_to_perspective(noise.copy(), 12, 10, 70, 30, 10))
        assert (second >= 0).all()

    def test_numpy_angles_and_sizes(self, noise):
        view = equirect_to_perspective(noise, np.int64(12), 10, np.array(70.0), np.float32(30), np.array(10))
        np.testing.assert_array_equal(view, equirect_to_perspective(noise, 12, 10, 70, 30, 10))

    def test_a_cached_geometry_serves_other_images_of_its_shape(self, noise):
        other = noise[::-1, ::-1].copy()
        clear_caches()
        expected = equirect_to_cubemap(other, 6)
        equirect_to_cubemap(noise, 6)
        np.testing.assert_array_equal(equirect_to_cubemap(other, 6), expected)
        assert equirect_to_cubemap(noise[..., :2], 6).shape == (6, 6, 6, 2)  # the shape holds C

    def test_single_row_and_column_images(self):
        row = np.arange(8, dtype=np.float32).reshape(1, 8, 1)
        np.testing.assert_allclose(sample_equirect(row, 2.5 / 8, np.array([0.0, 0.4, 1.0])), [[2], [2], [2]])
        column = np.arange(4, dtype=np.float32).reshape(4, 1, 1)
        np.testing.assert_allclose(sample_equirect(column, np.array([0.1, 0.9]), 1 - 2 / 4), [[1.5], [1.5]])

    @pytest.mark.parametrize("view", [(40, 30, 70, 120, 35, 0), (33, 33, 90, -60, -20, 40)])
    def test_fast_equals_exact_within_a_32nd_of_a_pixel_step(self, noise, view):
        """OpenCV rounds sample positions to 1/32 pixel: off by at most 1/64 pixel along each
        axis, the lookup moves by at most 1/32 of the largest step between neighbouring pixels."""
        pytest.importorskip("cv2")
        assert fast_sampler() == "opencv"
        steps = max(np.abs(np.diff(noise, axis=0)).max(), np.abs(np.diff(noise, axis=1)).max())
        exact, fast = (equirect_to_perspective(noise, *view, fast=fast) for fast in (False, True))
        assert np.abs(fast - exact).max() <= steps / 32 + 1e-6
        assert 0 < np.abs(fast - exact).mean() < steps / 128  # it really ran, and rounds both ways
        exact, fast = (equirect_to_cubemap(noise, 24, fast=fast) for fast in (False, True))
        assert fast.shape == exact.shape and fast.dtype == np.float32
        assert np.abs(fast - exact).max() <= steps / 32 + 1e-6

    def test_fast_keeps_the_orientation(self, smooth):
        pytest.importorskip("cv2")
        faces = equirect_to_cubemap(smooth, 20, fast=True)
        for face, name in zip(faces, CUBE_FACES):
            expected = colour_of(perspective_directions(20, 20, 90.0, *CUBE_FACE_ANGLES[name]))
            np.testing.assert_allclose(face, expected, atol=SMOOTH_ATOL, err_msg=name)
        view = equirect_to_perspective(smooth, 40, 30, 70, 10, 80, -25, fast=True)
        np.testing.assert_allclose(view, colour_of(perspective_directions(40, 30, 70, 10, 80, -25)), atol=SMOOTH_ATOL)

    def test_fast_is_exact_without_opencv_or_beyond_its_reach(self, noise, monkeypatch):
        wide = np.random.default_rng(5).random((1, 2**15, 1), dtype=np.float32)  # wider than int16 maps
        np.testing.assert_array_equal(
            equirect_to_perspective(wide, 9, 7, 50, fast=True), equirect_to_perspective(wide, 9, 7, 50)
        )
        monkeypatch.setattr(projection, "_opencv", lambda: None)
        clear_caches()
        assert fast_sampler() == "exact"
        np.testing.assert_array_equal(equirect_to_cubemap(noise, 8, fast=True), equirect_to_cubemap(noise, 8))
        clear_caches()


class TestResize:
    def test_integer_shrink_is_the_block_mean(self, noise):
        small = resize_equirect(noise, 8)
        assert small.shape == (4, 8, 3) and small.dtype == np.float32
        np.testing.assert_allclose(small, noise.reshape(4, 4, 8, 4, 3).mean(axis=(1, 3)), atol=1e-6)

    def test_shrink_keeps_a_small_light(self):
        image = np.zeros((64, 128, 3), np.float32)
        image[20, 77] = 1000.0
        small = resize_equirect(image, 50)
        assert small.shape == (25, 50, 3)
        assert small.sum() * (64 * 128) / (25 * 50) == pytest.approx(3000.0, rel=1e-5)

    def test_grow_interpolates_and_wraps(self, noise):
        big = resize_equirect(noise, 64)
        assert big.shape == (32, 64, 3)
        # Output column 0 sits a quarter pixel left of input column 0: across the seam.
        expected = 0.75 * noise[:, 0] + 0.25 * noise[:, -1]
        np.testing.assert_allclose(
            big[1::2, 0], 0.75 * expected + 0.25 * np.vstack([expected[1:], expected[-1:]]), atol=1e-6
        )
        np.testing.assert_allclose(resize_equirect(np.full((8, 16, 3), 2.5, np.float32), 40), 2.5, atol=1e-6)
