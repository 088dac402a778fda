"""Tests for lediff_backend.hdr.regions: components and distances on masks that wrap in u."""

from __future__ import annotations

import numpy as np

from lediff_backend.hdr.regions import inner_distance, wrapped_labels

# Euclidean distances of whole pixels, computed in float32.
TOLERANCE = 1e-6


def mask_from(rows: list[str]) -> np.ndarray:
    """A bool mask drawn with '#' (True) and '.' (False)."""
    return np.array([[c == "#" for c in row] for row in rows])


def same_label(labels: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> bool:
    return labels[a] != 0 and labels[a] == labels[b]


class TestWrappedLabels:
    MASK = mask_from(
        [
            "##......#",
            "........#",
            "...##....",
            "#.......#",
        ]
    )

    def test_seam_joins_components(self):
        labels, count = wrapped_labels(self.MASK)
        # {(0,0),(0,1),(0,8),(1,8)} across the seam, the middle pair, {(3,0),(3,8)} across the seam.
        assert count == 3
        assert same_label(labels, (0, 0), (0, 8)) and same_label(labels, (0, 0), (1, 8))
        assert same_label(labels, (3, 0), (3, 8))
        assert not same_label(labels, (0, 0), (3, 0))
        assert not same_label(labels, (0, 0), (2, 3))
        np.testing.assert_array_equal(np.unique(labels), [0, 1, 2, 3])  # no gaps
        np.testing.assert_array_equal(labels == 0, ~self.MASK)

    def test_without_wrap_components_stay_apart(self):
        labels, count = wrapped_labels(self.MASK, wrap=False)
        assert count == 5
        assert not same_label(labels, (0, 0), (0, 8))
        assert not same_label(labels, (3, 0), (3, 8))
        np.testing.assert_array_equal(np.unique(labels), np.arange(6))

    def test_diagonal_across_the_seam(self):
        down = mask_from(["....#", "#....", "....."])  # (0,4) touches (1,0) diagonally
        up = mask_from([".....", "#....", "....#"])  # (2,4) touches (1,0) diagonally
        for mask in (down, up):
            labels, count = wrapped_labels(mask)
            assert count == 1
            assert wrapped_labels(mask, wrap=False)[1] == 2
        # Two rows apart is not touching.
        assert wrapped_labels(mask_from(["....#", ".....", "#...."]))[1] == 2

    def test_no_wrap_between_top_and_bottom_rows(self):
        # Column 0 of the top row and column W-1 of the bottom row are far apart on the sphere.
        assert wrapped_labels(mask_from(["#....", ".....", "....#"]))[1] == 2

    def test_ring_around_the_sphere_is_one(self):
        mask = np.zeros((5, 12), bool)
        mask[2] = True
        mask[0, [0, 11]] = True
        labels, count = wrapped_labels(mask)
        assert count == 2
        assert len(np.unique(labels[2])) == 1

    def test_chain_of_merges_keeps_labels_compact(self):
        # Three pieces joined only through the seam: left part of rows 0-1, right part of
        # rows 0-1 and 2-3, left part of rows 2-3 (a zig-zag), and a separate blob.
        mask = mask_from(
            [
                "#.....#",
                "#..#...",
                "......#",
                "#.....#",
            ]
        )
        labels, count = wrapped_labels(mask)
        assert count == 2
        assert same_label(labels, (0, 0), (3, 0)) and same_label(labels, (0, 6), (2, 6))
        assert not same_label(labels, (1, 3), (0, 0))
        np.testing.assert_array_equal(np.unique(labels), [0, 1, 2])

    def test_empty_and_full(self):
        labels, count = wrapped_labels(np.zeros((3, 4), bool))
        assert count == 0 and not labels.any()
        labels, count = wrapped_labels(np.ones((3, 4), bool))
        assert count == 1 and (labels == 1).all()


class TestInnerDistance:
    def test_small_masks(self):
        mask = mask_from(
            [
                ".......",
                ".###...",
                ".###.#.",
                ".###...",
                ".......",
            ]
        )
        expected = np.zeros((5, 7))
        expected[1:4, 1:4] = 1.0
        expected[2, 2] = 2.0
        expected[2, 5] = 1.0
        np.testing.assert_allclose(inner_distance(mask), expected, atol=TOLERANCE)

    def test_euclidean(self):
        mask = np.zeros((9, 20), bool)
        mask[1:8, 2:9] = True  # a 7x7 square: the centre is 4 pixels from the nearest outside
        distance = inner_distance(mask)
        np.testing.assert_allclose(distance[4, 5], 4.0, atol=TOLERANCE)
        np.testing.assert_allclose(distance[1, 2], 1.0, atol=TOLERANCE)
        np.testing.assert_allclose(distance[2, 3], 2.0, atol=TOLERANCE)
        assert (distance[~mask] == 0).all()

    def test_across_the_seam(self):
        # Columns 7, 0, 1, 2 form one 4-wide band when the seam is joined.
        mask = mask_from(
            [
                "........",
                "###....#",
                "###....#",
                "###....#",
                "###....#",
                "###....#",
                "........",
            ]
        )
        wrapped = inner_distance(mask)
        np.testing.assert_allclose(wrapped[3, [7, 0, 1, 2]], [1.0, 2.0, 2.0, 1.0], atol=TOLERANCE)
        # Apart, column 0 is 3 pixels from column 3 and column 7 one from column 6.
        flat = inner_distance(mask, wrap=False)
        np.testing.assert_allclose(flat[3, [7, 0, 1, 2]], [1.0, 3.0, 2.0, 1.0], atol=TOLERANCE)

    def test_top_and_bottom_rows_are_not_boundaries(self):
        # A region touching the top row keeps growing towards the zenith.
        mask = mask_from(
            [
                ".#####.",
                ".#####.",
                ".......",
                ".......",
            ]
        )
        distance = inner_distance(mask, wrap=False)
        np.testing.assert_allclose(distance[:2, 3], [2.0, 1.0], atol=TOLERANCE)  # not [1, 1]
        np.testing.assert_allclose(distance[0, 1], 1.0, atol=TOLERANCE)
        flipped = inner_distance(mask[::-1], wrap=False)
        np.testing.assert_allclose(flipped[::-1], distance, atol=TOLERANCE)

    def test_empty_mask(self):
        distance = inner_distance(np.zeros((3, 8), bool))
        assert distance.dtype == np.float32 and distance.shape == (3, 8) and not distance.any()
