"""CSPNNet: shapes at any size, depth encoding, consistency with the propagation, gradients, config checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from depth_completion_ros.core.errors import ShapeError
from depth_completion_ros.core.model import CSPNModelConfig, CSPNNet, prepare_for_inference
from depth_completion_ros.core.propagation import cspn_propagate, normalize_affinity

SMALL = {"base_width": 4, "depth": 3, "max_width": 16, "iterations": 3}


def _inputs(rng, B=1, H=21, W=35, density=0.1, lo=0.1, hi=250.0):
    rgb = torch.from_numpy(rng.random((B, 3, H, W)).astype(np.float32))
    depth = np.exp(rng.uniform(math.log(lo), math.log(hi), (B, 1, H, W)))
    sparse = np.where(rng.random((B, 1, H, W)) < density, depth, 0.0).astype(np.float32)
    s = torch.from_numpy(sparse)
    return rgb, s, (s > 0).float()


@pytest.mark.parametrize(("H", "W"), [(21, 35), (8, 8), (1, 3), (33, 17)])
def test_shapes_any_size(rng, H, W):
    model = CSPNNet(CSPNModelConfig(**SMALL)).eval()
    rgb, s, m = _inputs(rng, B=2, H=H, W=W)
    with torch.inference_mode():
        out = model(rgb, s, m)
    assert set(out) >= {"pred", "pred_init", "affinity", "confidence"}
    for key, c in (("pred", 1), ("pred_init", 1), ("affinity", 8), ("confidence", 1), ("gate", 1)):
        assert out[key].shape == (2, c, H, W), key
        assert out[key].dtype == torch.float32
        assert torch.isfinite(out[key]).all()
    assert float(out["confidence"].min()) >= 0.0
    assert float(out["confidence"].max()) <= 1.0
    assert float(out["affinity"].abs().sum(1).max()) <= 1.0 + 1e-5


def test_pred_init_in_range_and_depth_encoding_roundtrip(rng):
    cfg = CSPNModelConfig(**SMALL, min_depth=0.1, max_depth=250.0)
    model = CSPNNet(cfg).eval()
    d = torch.tensor([0.1, 0.5, 3.0, 80.0, 250.0])
    enc = model.encode_depth(d)
    np.testing.assert_allclose(enc.numpy(), np.log(d.numpy() / 0.1) / np.log(2500.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.decode_depth(enc).numpy(), d.numpy(), rtol=1e-5)
    assert float(model.encode_depth(torch.tensor([0.0]))) == 0.0
    rgb, s, m = _inputs(rng)
    with torch.inference_mode():
        out = model(rgb, s, m)
    assert float(out["pred_init"].min()) >= 0.1 * (1 - 1e-5)
    assert float(out["pred_init"].max()) <= 250.0 * (1 + 1e-5)


def test_pred_is_the_propagation_of_the_heads(rng):
    """pred = cspn_propagate(pred_init, affinity, sparse, gate) recomputed independently."""
    model = CSPNNet(CSPNModelConfig(**SMALL, dilation=2)).eval()
    rgb, s, m = _inputs(rng, B=2)
    with torch.inference_mode():
        out = model(rgb, s, m)
        again = cspn_propagate(
            out["pred_init"],
            out["affinity"],
            iterations=3,
            sparse=s,
            sparse_confidence=out["gate"],
            dilation=2,
            normalized=True,
        )
    np.testing.assert_allclose(out["pred"].numpy(), again.numpy(), rtol=1e-6, atol=1e-6)
    # the affinity is normalized (idempotent under renormalization where the sum is 1)
    renorm = normalize_affinity(out["affinity"], "8sum_abs", dilation=2)
    np.testing.assert_allclose(renorm.numpy(), out["affinity"].numpy(), rtol=1e-4, atol=1e-6)


def test_without_gate_sparse_is_imposed_exactly(rng):
    model = CSPNNet(CSPNModelConfig(**SMALL, use_confidence_gate=False)).eval()
    rgb, s, m = _inputs(rng, density=0.2)
    with torch.inference_mode():
        out = model(rgb, s, m)
    assert out["gate"] is None
    valid = s > 0
    np.testing.assert_array_equal(out["pred"][valid].numpy(), s[valid].numpy())


def test_mask_zero_hides_measurements(rng):
    """Values where mask == 0 are ignored (sparse is multiplied by the mask)."""
    model = CSPNNet(CSPNModelConfig(**SMALL)).eval()
    rgb, s, m = _inputs(rng, density=0.3)
    junk = s.clone()
    junk[m == 0] = 123.0
    with torch.inference_mode():
        a = model(rgb, s, m)["pred"]
        b = model(rgb, junk, m)["pred"]
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_batch_independence_eval(rng):
    model = CSPNNet(CSPNModelConfig(**SMALL)).eval()
    rgb, s, m = _inputs(rng, B=3)
    with torch.inference_mode():
        full = model(rgb, s, m)["pred"]
        one = model(rgb[1:2], s[1:2], m[1:2])["pred"]
    np.testing.assert_allclose(full[1:2].numpy(), one.numpy(), rtol=1e-4, atol=1e-4)


def test_gradients_reach_every_parameter(rng, one_thread):
    model = CSPNNet(CSPNModelConfig(**SMALL)).train()
    rgb, s, m = _inputs(rng, B=2, H=16, W=24)
    out = model(rgb, s, m)
    loss = out["pred"].mean() + out["pred_init"].mean() + out["confidence"].mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    head_w = model.head[-1].weight.grad
    assert float(head_w.abs().sum()) > 0


@pytest.fixture
def one_thread():
    """Small tensors: one intra-op thread avoids OpenMP oversubscription on the shared 2-core machine."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_short_overfit_reduces_error(rng, one_thread):
    """A few Adam steps on one scene lower the L1 error of pred against a ground truth."""
    torch.manual_seed(0)
    model = CSPNNet(CSPNModelConfig(**SMALL)).train()
    H, W = 16, 24
    gt = torch.from_numpy(np.linspace(2.0, 40.0, W, dtype=np.float32))[None, None, None].expand(1, 1, H, W).clone()
    rgb = torch.from_numpy(rng.random((1, 3, H, W)).astype(np.float32))
    s = torch.where(torch.from_numpy(rng.random((1, 1, H, W)) < 0.1), gt, torch.zeros_like(gt))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(rgb, s, (s > 0).float())
        loss = (out["pred"] - gt).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_config_validation_and_dict_roundtrip():
    cfg = CSPNModelConfig(**SMALL)
    assert CSPNModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.stride == 8
    with pytest.raises(ValueError, match="unknown"):
        CSPNModelConfig.from_dict({**cfg.to_dict(), "nope": 1})
    for bad in ({"depth": 0}, {"iterations": -1}, {"normalization": "x"}, {"min_depth": 0.0}, {"dilation": 0}):
        with pytest.raises(ValueError):
            CSPNModelConfig(**bad)
    with pytest.raises(TypeError):
        CSPNModelConfig(4)  # keyword-only


def test_bad_shapes_raise(rng):
    model = CSPNNet(CSPNModelConfig(**SMALL)).eval()
    rgb, s, m = _inputs(rng)
    with pytest.raises(ShapeError, match="sparse"):
        model(rgb, s[..., :-1], m)
    with pytest.raises(ShapeError, match="rgb"):
        model(rgb[:, :2], s, m)


def test_prepare_for_inference_cpu(rng):
    model = prepare_for_inference(CSPNNet(CSPNModelConfig(**SMALL)), "cpu")
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"
    rgb, s, m = _inputs(rng)
    with torch.inference_mode():
        assert model(rgb, s, m)["pred"].shape == s.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_matches_cpu(rng):
    model = CSPNNet(CSPNModelConfig(**SMALL)).eval()
    rgb, s, m = _inputs(rng, H=40, W=64)
    with torch.inference_mode():
        ref = model(rgb, s, m)["pred"]
        gpu = prepare_for_inference(model, "cuda")
        with torch.autocast("cuda", dtype=torch.float16):
            out = gpu(rgb.cuda(), s.cuda(), m.cuda())
    assert out["pred"].dtype == torch.float32
    np.testing.assert_allclose(out["pred"].cpu().numpy(), ref.numpy(), rtol=0.05, atol=0.05)
