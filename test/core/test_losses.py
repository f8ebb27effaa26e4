"""Losses: hand-computed values over valid pixels, weights, gradient routing of the confidence terms."""

from __future__ import annotations

import math

import pytest
import torch

from depth_completion_ros.core.errors import ShapeError
from depth_completion_ros.core.losses import (
    LossConfig,
    completion_loss,
    confidence_target_loss,
    laplace_nll,
    masked_l1,
    masked_l2,
)


def _pair():
    gt = torch.tensor([[[[1.0, 0.0], [2.0, 4.0]]]])  # one missing pixel
    pred = torch.tensor([[[[1.5, 9.0], [1.0, 4.0]]]])
    return pred, gt


def test_masked_l1_l2_hand_values():
    pred, gt = _pair()
    # errors on valid pixels: 0.5, -1.0, 0.0 (the 9.0 at gt = 0 is ignored)
    assert masked_l1(pred, gt).item() == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert masked_l2(pred, gt).item() == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    w = torch.tensor([[[[2.0, 5.0], [1.0, 1.0]]]])
    assert masked_l1(pred, gt, w).item() == pytest.approx((2 * 0.5 + 1.0) / (2 + 1 + 1))


def test_batch_pooling():
    pred = torch.tensor([[[[1.0, 1.0]]], [[[3.0, 0.0]]]])
    gt = torch.tensor([[[[2.0, 2.0]]], [[[2.0, 0.0]]]])
    # pooled: (1 + 1 + 1) / 3 valid pixels
    assert masked_l1(pred, gt).item() == pytest.approx(1.0)


def test_shape_mismatch():
    with pytest.raises(ShapeError, match="shape"):
        masked_l1(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))


def test_confidence_target_hand_value_and_gradient_routing():
    pred = torch.tensor([[[[2.0, 3.0]]]], requires_grad=True)
    gt = torch.tensor([[[[2.0, 2.0]]]])
    conf = torch.tensor([[[[0.9, 0.2]]]], requires_grad=True)
    loss = confidence_target_loss(pred, gt, conf, scale=1.0)
    t = [1.0, math.exp(-1.0)]
    c = [0.9, 0.2]
    ref = sum(-(ti * math.log(ci) + (1 - ti) * math.log(1 - ci)) for ti, ci in zip(t, c, strict=True)) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    loss.backward()
    assert pred.grad is None or torch.all(pred.grad == 0)
    assert conf.grad is not None and torch.any(conf.grad != 0)


def test_laplace_nll_minimum_at_scale_over_error():
    gt = torch.tensor([[[[10.0]]]])
    pred = torch.tensor([[[[12.0]]]])  # |e| = 2 -> optimum c = scale / |e| = 0.25
    cs = torch.linspace(0.05, 1.0, 96)
    vals = [laplace_nll(pred, gt, torch.full((1, 1, 1, 1), float(c)), scale=0.5).item() for c in cs]
    best = float(cs[int(torch.tensor(vals).argmin())])
    assert best == pytest.approx(0.25, abs=0.011)
    assert laplace_nll(pred, gt, torch.full((1, 1, 1, 1), 0.5), scale=0.5).item() == pytest.approx(
        2 * 0.5 / 0.5 - math.log(0.5)
    )


def test_completion_loss_terms():
    pred, gt = _pair()
    init = pred + 1.0
    out = {"pred": pred, "pred_init": init, "confidence": torch.full_like(pred, 0.5)}
    cfg = LossConfig(l1=1.0, l2=0.5, init=0.2, confidence=0.1)
    total, parts = completion_loss(out, gt, cfg)
    assert set(parts) == {"l1", "l2", "init", "confidence"}
    assert parts["l1"] == pytest.approx(1.5 / 3)
    assert parts["l2"] == pytest.approx(0.5 * 1.25 / 3)
    assert parts["init"] == pytest.approx(0.2 * (1.5 + 0.0 + 1.0) / 3)  # |2.5-1|, |2-2|, |5-4|
    assert total.item() == pytest.approx(sum(parts.values()), rel=1e-6)
    with pytest.raises(ValueError, match="confidence_mode"):
        LossConfig(confidence_mode="gaussian")
