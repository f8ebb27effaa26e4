"""Tests of core/affinity.py."""

from __future__ import annotations

import numpy as np
import pytest

from depth_completion_ros.core.affinity import NEIGHBOUR_OFFSETS, anchored_affinity, colour_sigma, rgb_affinity
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


@pytest.mark.parametrize("dilation", [1, 2, 8])  # 8: every neighbour of the 7×9 image is outside in y
def test_matches_reference(rng, dilation):
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    got = rgb_affinity(rgb, sigma=20.0, sigma_scale=1.5, dilation=dilation)
    assert tuple(got.shape) == (1, 8, 7, 9)
    # The kernel is tabulated in 256 steps over |ΔI|_1 / s in [0, 3.75]: error <= 0.0063 by construction.
    np.testing.assert_allclose(got.numpy(), _reference(rgb, 30.0, dilation), rtol=0, atol=0.0065)


@pytest.mark.parametrize("sigma", [0.5, 3.0, 40.0, 400.0])
def test_kernel_table_error_bound(rng, sigma):
    """The tabulated kernel stays within its stated error for low- and high-contrast scales alike."""
    rgb = rng.integers(0, 256, (12, 15, 3), dtype=np.uint8)
    if sigma < 5:
        rgb = (100 + rgb // 64).astype(np.uint8)  # colour steps of a few units, comparable to sigma
    got = rgb_affinity(rgb, sigma=sigma, sigma_scale=1.0).numpy()
    ref = _reference(rgb, sigma)
    assert np.abs(got - ref).max() <= 0.0065
    assert (ref > 0.01).any() and (ref < 0.99).any()  # the comparison covers the kernel's slope


def test_anchored_normalization(rng):
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    raw = rgb_affinity(rgb, sigma=25.0, sigma_scale=1.0).numpy()[0]
    w, centre = anchored_affinity(rgb, anchor=0.5, sigma=25.0, sigma_scale=1.0)
    assert w.shape == (8, 9, 11) and centre.shape == (9, 11)
    np.testing.assert_allclose(w, raw / (raw.sum(axis=0) + 0.5), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(centre, 1.0 - w.sum(axis=0), atol=1e-6)
    assert (centre > 0).all() and (centre <= 1).all()
    with pytest.raises(ValueError):
        anchored_affinity(rgb, anchor=0.0)


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


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 18, 3), (18, 2, 3), (3, 3, 3)])
def test_tiny_images(rng, shape):
    """Images one (subsampled) pixel wide or high: no neighbour pairs along that axis, still valid weights."""
    rgb = rng.integers(0, 256, shape, dtype=np.uint8)
    assert colour_sigma(rgb) >= 1.0
    w, centre = anchored_affinity(rgb, anchor=0.5)
    assert np.isfinite(w).all() and np.allclose(w.sum(axis=0) + centre, 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)]
)
def test_bad_input(bad):
    with pytest.raises(ShapeError):
        rgb_affinity(bad)


@pytest.mark.parametrize("shape", [(40, 57), (31, 2), (1, 9), (2, 1)])
def test_colour_sigma_is_the_upper_median_of_neighbour_steps(rng, shape):
    """The histogram median equals the sorted-array definition (element n // 2) on the 2x subsample."""
    rgb = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    sub = rgb[::2, ::2].astype(np.int64)
    steps = np.concatenate(
        [np.abs(sub[:, 1:] - sub[:, :-1]).sum(-1).ravel(), np.abs(sub[1:] - sub[:-1]).sum(-1).ravel()]
    )
    expected = max(1.0, float(np.sort(steps)[steps.size // 2])) if steps.size else 1.0
    assert colour_sigma(rgb) == expected


def test_pair_affinity_is_the_8_channel_affinity(rng):
    """Pair arrays expanded to 8 channels = the raw affinities; inv_norm = 1 / (Σ w + anchor)."""
    from depth_completion_ros.core.affinity import anchored_pair_affinity

    rgb = rng.integers(0, 255, (13, 17, 3), dtype=np.uint8)
    for d in (1, 2):
        raw = rgb_affinity(rgb, sigma=25.0, sigma_scale=1.0, dilation=d).numpy()[0]
        aff = anchored_pair_affinity(rgb, anchor=0.5, sigma=25.0, sigma_scale=1.0, dilation=d)
        assert aff.pairs.shape == (4, 13 + 2 * d, 17 + 2 * d)
        np.testing.assert_allclose(aff.inv_norm, 1.0 / (raw.sum(axis=0) + 0.5), rtol=1e-6)
        w, centre = aff.expanded()
        np.testing.assert_allclose(w, raw * aff.inv_norm, rtol=1e-6)
        np.testing.assert_allclose(centre + w.sum(axis=0), 1.0, rtol=1e-6)
