"""k×k propagation against per-pixel loop references written here, and the authors' (scatter) convention mapping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depth_completion_ros.core.errors import ShapeError
from depth_completion_ros.core.kernel_propagation import (
    gather_to_scatter,
    kernel_offsets,
    normalized_scatter_to_gather,
    propagate_kxk,
    scatter_to_gather,
)


def _offsets(k: int, d: int) -> list[tuple[int, int]]:
    r = k // 2
    return [(d * (a - r), d * (b - r)) for a in range(k) for b in range(k)]


def ref_gather(h0, w, k, d, n, sparse=None, gate=None):
    """Loops: H'(p) = Σ_{m≠c} w_m(p) H(p + d·o_m) + w_c(p) h0(p); then g·S + (1−g)·H where S > 0."""
    B, _, H, W = h0.shape
    offs = _offsets(k, d)
    c = len(offs) // 2
    h0, w = h0.astype(np.float64), w.astype(np.float64)
    h = h0.copy()
    for _ in range(n):
        new = np.zeros_like(h)
        for b in range(B):
            for y in range(H):
                for x in range(W):
                    v = w[b, c, y, x] * h0[b, 0, y, x]
                    for m, (dy, dx) in enumerate(offs):
                        if m != c and 0 <= y + dy < H and 0 <= x + dx < W:
                            v += w[b, m, y, x] * h[b, 0, y + dy, x + dx]
                    if sparse is not None and sparse[b, 0, y, x] > 0:
                        g = 1.0 if gate is None else float(gate[b, 0, y, x])
                        v = g * float(sparse[b, 0, y, x]) + (1 - g) * v
                    new[b, 0, y, x] = v
        h = new
    return h


def ref_scatter(h0, g, k, d, n):
    """The authors' convention, loops: H'(p) = Σ_{t≠c} g_t(p − d·o_t) H(p − d·o_t) + g_c(p) h0(p)."""
    B, _, H, W = h0.shape
    offs = _offsets(k, d)
    c = len(offs) // 2
    h0, g = h0.astype(np.float64), g.astype(np.float64)
    h = h0.copy()
    for _ in range(n):
        new = np.zeros_like(h)
        for b in range(B):
            for y in range(H):
                for x in range(W):
                    v = g[b, c, y, x] * h0[b, 0, y, x]
                    for t, (dy, dx) in enumerate(offs):
                        qy, qx = y - dy, x - dx
                        if t != c and 0 <= qy < H and 0 <= qx < W:
                            v += g[b, t, qy, qx] * h[b, 0, qy, qx]
                    new[b, 0, y, x] = v
        h = new
    return h


def _inputs(rng, k, B=2, H=9, W=11, density=0.25):
    h0 = rng.uniform(1.0, 50.0, (B, 1, H, W)).astype(np.float32)
    raw = rng.normal(0.0, 1.0, (B, k * k, H, W))
    w = (raw / np.abs(raw).sum(axis=1, keepdims=True)).astype(np.float32)  # Σ|w| = 1: bounded values
    sparse = np.where(rng.random((B, 1, H, W)) < density, rng.uniform(1.0, 50.0, (B, 1, H, W)), 0.0)
    gate = rng.uniform(0.0, 1.0, (B, 1, H, W)).astype(np.float32)
    return h0, w, sparse.astype(np.float32), gate


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("mode", ["none", "hard", "gate"])
def test_matches_loop_reference(k, d, mode):
    rng = np.random.default_rng(100 * k + 10 * d + len(mode))
    h0, w, sparse, gate = _inputs(rng, k)
    s = None if mode == "none" else sparse
    g = gate if mode == "gate" else None
    expected = ref_gather(h0, w, k, d, 3, s, g)
    kw = {"sparse": None if s is None else _t(s), "gate": None if g is None else _t(g)}
    # fast CPU path (float32, no grad)
    got = propagate_kxk(_t(h0), _t(w), kernel_size=k, iterations=3, dilation=d, **kw)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-3)
    # in-place torch path (the CUDA one), exercised on the CPU in float64
    got64 = propagate_kxk(
        _t(h0).double(), _t(w).double(), kernel_size=k, iterations=3, dilation=d,
        **{key: None if v is None else v.double() for key, v in kw.items()},
    )  # fmt: skip
    np.testing.assert_allclose(got64.numpy(), expected, rtol=1e-10, atol=1e-9)
    # differentiable path
    wt = _t(w).requires_grad_(True)
    got_g = propagate_kxk(_t(h0), wt, kernel_size=k, iterations=3, dilation=d, **kw)
    np.testing.assert_allclose(got_g.detach().numpy(), expected, rtol=1e-4, atol=1e-3)
    got_g.sum().backward()
    assert wt.grad is not None and torch.isfinite(wt.grad).all()


def test_hard_replacement_is_exact_and_zero_iterations_is_h0():
    rng = np.random.default_rng(1)
    h0, w, sparse, _ = _inputs(rng, 3)
    got = propagate_kxk(_t(h0), _t(w), kernel_size=3, iterations=4, sparse=_t(sparse)).numpy()
    np.testing.assert_array_equal(got[sparse > 0], sparse[sparse > 0])
    np.testing.assert_array_equal(propagate_kxk(_t(h0), _t(w), kernel_size=3, iterations=0).numpy(), h0)


def _authors_encoder(k: int) -> torch.Tensor:
    """The fixed 0/1 convolution PENet applies to its guidance (written from its description): output channel
    k²−1−j takes input channel j = a·k + b at kernel tap (k−1−a, k−1−b)."""
    enc = torch.zeros(k * k, k * k, k, k)
    for a in range(k):
        for b in range(k):
            j = a * k + b
            enc[k * k - 1 - j, j, k - 1 - a, k - 1 - b] = 1.0
    return enc


@pytest.mark.parametrize("k", [3, 5, 7])
def test_scatter_to_gather_is_the_authors_encoder_convolution(k):
    g = torch.randn(2, k * k, 8, 10, generator=torch.Generator().manual_seed(k))
    expected = F.conv2d(g, _authors_encoder(k), padding=k // 2)
    torch.testing.assert_close(scatter_to_gather(g, k), expected, rtol=0, atol=0)


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("d", [1, 2])
def test_authors_scatter_convention_maps_onto_gather(k, d):
    """Their channel t is the neighbour at −o_t, weight read at the neighbour; ours after scatter_to_gather."""
    rng = np.random.default_rng(7 * k + d)
    h0, g, _, _ = _inputs(rng, k)
    expected = ref_scatter(h0, g, k, d, 3)
    w = scatter_to_gather(_t(g), k, dilation=d)
    got = propagate_kxk(_t(h0), w, kernel_size=k, iterations=3, dilation=d)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-3)
    # inverse inside the image (pixels whose partner is inside keep their weight)
    back = gather_to_scatter(w, k, dilation=d)
    inner = slice(d * (k // 2), -d * (k // 2))
    torch.testing.assert_close(back[..., inner, inner], _t(g)[..., inner, inner])


@pytest.mark.parametrize("k", [3, 5, 7])
def test_dilated_stage_equals_residue_grid_propagation(k):
    """PENet's dilation-2 stage (half-res weights flipped at half res, upsampled, dilation-2 gather at full res) is
    four dilation-1 propagations on the residue grids with the half-resolution weights."""
    rng = np.random.default_rng(k)
    h0, _, sparse, gate = _inputs(rng, k, H=12, W=14)
    _, g_half, _, _ = _inputs(rng, k, H=6, W=7)
    w_half = scatter_to_gather(_t(g_half[:1]), k)
    gate_half = _t(gate[:1, :, ::2, ::2])
    s_half = _t(sparse[:1, :, ::2, ::2])
    w_up = F.interpolate(w_half, scale_factor=2, mode="nearest")
    full = propagate_kxk(
        _t(h0[:1]), w_up, kernel_size=k, iterations=3, dilation=2,
        sparse=F.interpolate(s_half, scale_factor=2, mode="nearest"),
        gate=F.interpolate(gate_half, scale_factor=2, mode="nearest"),
    )  # fmt: skip
    for r in range(2):
        for c in range(2):
            sub = propagate_kxk(
                _t(h0[:1, :, r::2, c::2]), w_half, kernel_size=k, iterations=3, sparse=s_half, gate=gate_half
            )
            torch.testing.assert_close(full[..., r::2, c::2], sub, rtol=1e-5, atol=1e-4)


def test_offsets_row_major_with_centre():
    offs = kernel_offsets(3)
    assert offs[0] == (-1, -1) and offs[4] == (0, 0) and offs[5] == (0, 1) and offs[8] == (1, 1)
    assert kernel_offsets(5, 2)[0] == (-4, -4)


def test_refusals():
    h0 = torch.zeros(1, 1, 4, 4)
    w = torch.zeros(1, 9, 4, 4)
    with pytest.raises(ValueError, match="kernel_size"):
        propagate_kxk(h0, w, kernel_size=4, iterations=1)
    with pytest.raises(ValueError, match="dilation"):
        propagate_kxk(h0, w, kernel_size=3, iterations=1, dilation=0)
    with pytest.raises(ShapeError, match="weights"):
        propagate_kxk(h0, torch.zeros(1, 25, 4, 4), kernel_size=3, iterations=1)
    with pytest.raises(ValueError, match="iterations"):
        propagate_kxk(h0, w, kernel_size=3, iterations=-1)
    with pytest.raises(ValueError, match="gate needs sparse"):
        propagate_kxk(h0, w, kernel_size=3, iterations=1, gate=h0)
    with pytest.raises(ShapeError, match="guide"):
        scatter_to_gather(torch.zeros(1, 8, 4, 4), 3)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_normalized_scatter_to_gather(k):
    """g / Σ|g|, centre 1 − Σ ĝ inserted mid-order, flipped: the CPU fast path equals the torch composition."""
    raw = torch.randn(2, k * k - 1, 9, 11, generator=torch.Generator().manual_seed(k))
    raw[0, :, 0, 0] = 0  # all-zero pixel: weights 0, centre 1 (the authors' code gives NaN)
    g = raw.double() / raw.double().abs().sum(1, keepdim=True).clamp_min(1e-12)
    half = (k * k - 1) // 2
    expected = scatter_to_gather(torch.cat((g[:, :half], 1 - g.sum(1, keepdim=True), g[:, half:]), 1), k)
    fast = normalized_scatter_to_gather(raw, k)
    torch.testing.assert_close(fast.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(normalized_scatter_to_gather(raw.double(), k), expected)
    assert fast[0, k * k // 2, 0, 0] == 1.0


@pytest.mark.parametrize(
    "start",
    [
        "from depth_completion_ros.core.kernel_propagation import match_torch_threads as start",
        "from depth_completion_ros.core.winograd import warm_up as start",  # what preparing a published net runs
        "from depth_completion_ros.core.narrow_conv import warm_up as start",
    ],
)
def test_numba_keeps_torch_thread_count(start):
    """Starting numba's thread pool must not change torch's thread count (the node's `num_threads`); a fresh
    interpreter, since the pool starts once per process."""
    code = f"import torch, numba\ntorch.set_num_threads(1)\n{start}\nstart()\n"
    code += "print(torch.get_num_threads(), numba.get_num_threads())\n"
    env = {**os.environ, "NUMBA_NUM_THREADS": "4", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["1", "1"]
