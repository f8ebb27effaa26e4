"""Tests of core/confidence.py: ranges, hand-computed factors, and that confidence ranks errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from depth_completion_ros.core.confidence import (
    combine_confidence,
    default_confidence,
    distance_confidence,
    edge_confidence,
    network_confidence,
)
from depth_completion_ros.core.errors import ShapeError
from depth_completion_ros.core.fill import classical_fill, nearest_fill
from depth_completion_ros.core.metrics import sparsification


def test_distance_factor_known_values():
    m = np.zeros((1, 9), bool)
    m[0, 0] = True
    c = distance_confidence(m, spacing=2.0)
    # exact Euclidean distance along the row: x pixels
    np.testing.assert_allclose(c[0], np.exp(-np.arange(9) / 2.0), rtol=1e-5)


def test_edge_factor_known_values():
    d = np.full((9, 9), 10.0, np.float32)
    d[:, 5:] = 20.0
    c = edge_confidence(d, window=3, scale=0.05)
    assert c[4, 1] == pytest.approx(1.0)
    # (20 - 10) / 20 = 0.5 relative range next to the step
    assert c[4, 4] == pytest.approx(np.exp(-0.5 / 0.05), rel=1e-5)


def test_combine_and_measured():
    a = np.full((3, 3), 0.5, np.float32)
    b = np.full((3, 3), 0.4, np.float32)
    m = np.zeros((3, 3), bool)
    m[1, 1] = True
    c = combine_confidence(a, b, measured=m)
    assert c[1, 1] == 1.0
    assert c[0, 0] == pytest.approx(0.2)


def test_default_range_and_shape_check(rng):
    d = rng.uniform(1, 50, (20, 30)).astype(np.float32)
    m = rng.random((20, 30)) < 0.1
    c = default_confidence(d, d * 1.1, m, 3.0)
    assert c.dtype == np.float32 and c.min() >= 0 and c.max() <= 1
    assert (c[m] == 1).all()
    with pytest.raises(ShapeError):
        default_confidence(d, d[:, :5], m, 3.0)


@pytest.mark.parametrize("spacing", [1.0, 4.0, 9.0])
def test_default_is_the_product_of_its_factors(rng, spacing):
    """The fused implementation equals distance × edge × disagreement computed factor by factor."""
    d = rng.uniform(1, 50, (31, 47)).astype(np.float32)
    d = cv2.GaussianBlur(d, (5, 5), 1.5)  # smooth enough that the factors are not all ~0
    initial = d * rng.uniform(0.95, 1.05, d.shape).astype(np.float32)
    m = rng.random(d.shape) < 0.05
    window = int(max(3, 2 * round(spacing / 2) + 1))
    disagreement = np.exp(-np.abs(d - initial) / d / 0.05)
    expected = distance_confidence(m, spacing) * edge_confidence(d, window=window) * disagreement
    expected[m] = 1.0
    got = default_confidence(d, initial, m, spacing)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert got.std() > 0.05  # not a degenerate comparison
    dist = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    np.testing.assert_allclose(default_confidence(d, initial, m, spacing, distance=dist), got, rtol=1e-5, atol=1e-7)


def test_default_without_measurements_is_zero(rng):
    d = rng.uniform(1, 50, (8, 9)).astype(np.float32)
    assert (default_confidence(d, d, np.zeros(d.shape, bool), 3.0) == 0).all()


def test_confidence_ranks_errors_synthetic(rng):
    """Two slanted planes at different depths, sparse random samples: low confidence must mark the errors."""
    h, w = 120, 160
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    gt = np.where(xx < 70 + 0.3 * yy, 8.0 + 0.02 * yy, 30.0 + 0.05 * xx).astype(np.float32)
    sp = np.where(rng.random((h, w)) < 0.02, gt, 0).astype(np.float32)
    pred = classical_fill(sp)
    spacing = 7.0
    conf = default_confidence(pred, pred, sp > 0, spacing)
    s = sparsification(pred, gt, conf)
    assert s["rmse_ratio_top50"] <= 0.6
    # and a random ranking does not do that
    s_rand = sparsification(pred, gt, rng.random((h, w)).astype(np.float32))
    assert s_rand["rmse_ratio_top50"] > 0.8


def test_network_confidence_ranks_known_errors(rng):
    """A net's output stood in for by a nearest fill with three known error sources: a hole in the measurements
    (error grows into it), a depth step between measured columns (wrong side near it) and a patch scaled by 8 %
    (disagrees with its own measurements).  `network_confidence` must mark each, and rank the errors overall.
    (test_completer_published.py checks its factors' order on a flat scene.)"""
    h, w = 96, 128
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    gt = np.where(xx < 62 + 0.2 * yy, 8.0 + 0.03 * yy + 0.02 * xx, 25.0 + 0.04 * xx).astype(np.float32)
    sp = np.zeros((h, w), np.float32)
    sp[2::4, 1::4] = gt[2::4, 1::4]
    hole = (slice(50, 90), slice(6, 46))  # left of the step
    sp[hole] = 0
    pred = nearest_fill(sp)
    bias = (slice(8, 40), slice(80, 120))  # right of the step
    pred[bias] *= 1.08
    conf = network_confidence(pred, sp, 4.0)
    err = np.abs(pred - gt)
    # far from measurements: inside the hole the larger half of the errors gets less than half the confidence
    e, c = err[hole], conf[hole]
    assert e.max() > 0.5 and c[e > np.median(e)].mean() < 0.5 * c[e <= np.median(e)].mean()
    # the step: pixels filled from the wrong side (errors > 1 m, outside the scaled patch) vs accurate ones
    in_bias = np.zeros((h, w), bool)
    in_bias[bias] = True
    step = (err > 1.0) & ~in_bias
    assert step.sum() > 50 and conf[step].mean() < 0.5 * conf[(err < 0.05) & ~in_bias].mean()
    # the patch that disagrees with its measurements vs an unscaled patch of the same surface and sampling
    assert conf[bias].mean() < 0.5 * conf[56:88, 80:120].mean()
    # overall ranking, against a random one
    s = sparsification(pred, gt, conf)
    s_rand = sparsification(pred, gt, rng.random((h, w)))
    assert s["rmse_ratio_top50"] < 0.2 and s_rand["rmse_ratio_top50"] > 0.8
    assert s["ause_mm"] < 0.2 * s_rand["ause_mm"]
