"""KITTI metrics: hand-computed per-image values, per-image-then-mean order, units, sparsification."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depth_completion_ros.core.errors import ShapeError
from depth_completion_ros.core.metrics import compute_metrics, mean_metrics, sparsification


def test_hand_computed_single_image():
    gt = np.array([[2.0, 0.0], [4.0, 10.0]])
    pred = np.array([[2.5, 7.0], [4.0, 8.0]])
    m = compute_metrics(pred, gt)
    # valid: (2.5 vs 2), (4 vs 4), (8 vs 10); errors 0.5, 0, -2 m
    assert m.valid_pixels == 3
    assert m.rmse_mm == pytest.approx(math.sqrt((0.25 + 0 + 4) / 3) * 1000)
    assert m.mae_mm == pytest.approx((0.5 + 0 + 2) / 3 * 1000)
    inv = [1 / 2.5 - 1 / 2, 0.0, 1 / 8 - 1 / 10]  # 1/m
    assert m.irmse_per_km == pytest.approx(math.sqrt(sum(x * x for x in inv) / 3) * 1000)
    assert m.imae_per_km == pytest.approx(sum(abs(x) for x in inv) / 3 * 1000)
    assert m.rel == pytest.approx((0.5 / 2 + 0 + 2 / 10) / 3)
    # ratios 1.25, 1, 1.25: delta < 1.25 is strict
    assert m.delta1 == pytest.approx(1 / 3)
    assert m.delta2 == pytest.approx(1.0)


def test_per_image_then_mean_differs_from_pooled():
    gt_a = np.full((1, 1), 10.0)  # one pixel, error 1 m
    pred_a = np.full((1, 1), 11.0)
    gt_b = np.full((1, 3), 10.0)  # three pixels, error 0
    pred_b = np.full((1, 3), 10.0)
    ma, mb = compute_metrics(pred_a, gt_a), compute_metrics(pred_b, gt_b)
    mean = mean_metrics([ma, mb])
    assert mean.rmse_mm == pytest.approx((1000.0 + 0.0) / 2)  # KITTI: per image, then over images
    assert mean.mae_mm == pytest.approx(500.0)
    pooled = compute_metrics(np.concatenate([pred_a, pred_b], 1), np.concatenate([gt_a, gt_b], 1))
    assert pooled.rmse_mm == pytest.approx(math.sqrt(1 / 4) * 1000)  # 500 vs pooled 500: check MAE instead
    assert pooled.mae_mm == pytest.approx(250.0)
    assert mean.mae_mm != pytest.approx(pooled.mae_mm)
    assert mean.valid_pixels == 4


def test_missing_prediction_and_nan_gt():
    gt = np.array([[5.0, np.nan, 0.0]])
    pred = np.array([[0.0, 5.0, 5.0]])  # missing prediction counts as 1 mm
    m = compute_metrics(pred, gt)
    assert m.valid_pixels == 1
    assert m.mae_mm == pytest.approx((5.0 - 0.001) * 1000)
    assert np.isfinite(m.irmse_per_km)


def test_errors():
    with pytest.raises(ShapeError, match="shape"):
        compute_metrics(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="no valid"):
        compute_metrics(np.ones((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ShapeError):
        mean_metrics([])


def test_sparsification_hand_values(rng):
    gt = np.full((1, 4), 10.0)
    pred = gt + np.array([[0.0, 1.0, 2.0, 3.0]])
    # confidence ranks exactly opposite to the error: curve == oracle, AUSE = 0
    conf = np.array([[0.9, 0.7, 0.5, 0.1]])
    s = sparsification(pred, gt, conf, fractions=[0.0, 0.5, 0.75])
    all_rmse = math.sqrt((0 + 1 + 4 + 9) / 4) * 1000
    assert s["rmse_mm"][0] == pytest.approx(all_rmse)
    assert s["rmse_mm"][1] == pytest.approx(math.sqrt(1 / 2) * 1000)  # keep the 2 most confident: 0, 1
    assert s["rmse_mm"][2] == pytest.approx(0.0)
    assert s["oracle_rmse_mm"] == pytest.approx(s["rmse_mm"])
    assert s["ause_mm"] == pytest.approx(0.0)
    assert s["rmse_ratio_top50"] == pytest.approx(math.sqrt(1 / 2) * 1000 / all_rmse)
    # inverted confidence: the curve lies above the oracle
    bad = sparsification(pred, gt, conf[:, ::-1], fractions=[0.0, 0.5, 0.75])
    assert bad["rmse_mm"][1] == pytest.approx(math.sqrt((4 + 9) / 2) * 1000)
    # AUSE = trapezoid of the gap: gaps 0, 2549.5..-707.1, 3000
    gap = [0.0, math.sqrt(6.5) * 1000 - math.sqrt(0.5) * 1000, 3000.0]
    assert bad["ause_mm"] == pytest.approx(0.5 * (gap[0] + gap[1]) * 0.5 + 0.5 * (gap[1] + gap[2]) * 0.25)
    # random confidence on random data: curve never below the oracle
    p = rng.uniform(1, 50, (20, 20))
    g = rng.uniform(1, 50, (20, 20))
    r = sparsification(p, g, rng.uniform(size=(20, 20)))
    assert np.all(np.asarray(r["rmse_mm"]) >= np.asarray(r["oracle_rmse_mm"]) - 1e-9)
