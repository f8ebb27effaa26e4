"""Tests of core/affinity.py."""

from __future__ import annotations

import numpy as np
import pytest

from depth_completion_ros.core.affinity import NEIGHBOUR_OFFSETS, colour_sigma, rgb_affinity
from depth_completion_ros.core.errors import ShapeError


def _reference(rgb, s, d=1):
    h, w, _ = rgb.shape
    out = np.zeros((1, 8, h, w), np.float64)
    img = rgb.astype(np.float64)
    for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        for y in range(h):
            for x in range(w):
                yy, xx = y + dy * d, x + dx * d
                if 0 <= yy < h and 0 <= xx < w:
                    diff = np.abs(img[y, x] - img[yy, xx]).sum() / s
                    out[0, k, y, x] = np.exp(-(diff**2))
    return out


@pytest.mark.parametrize("dilation", [1, 2])
def test_matches_reference(rng, dilation):
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    got = rgb_affinity(rgb, sigma=20.0, sigma_scale=1.5, dilation=dilation)
    assert tuple(got.shape) == (1, 8, 7, 9)
    np.testing.assert_allclose(got.numpy(), _reference(rgb, 30.0, dilation), rtol=1e-5, atol=1e-6)


def test_edge_blocks_propagation():
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[:, 5:] = 200
    a = rgb_affinity(rgb).numpy()[0]
    right = NEIGHBOUR_OFFSETS.index((0, 1))
    assert a[right, 3, 4] < 1e-3  # across the edge
    assert a[right, 3, 1] == pytest.approx(1.0)  # inside a uniform region


def test_colour_sigma_follows_contrast(rng):
    base = rng.integers(0, 20, (40, 40, 3)).astype(np.uint8)
    assert colour_sigma(base * 5) > colour_sigma(base)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)]
)
def test_bad_input(bad):
    with pytest.raises(ShapeError):
        rgb_affinity(bad)
