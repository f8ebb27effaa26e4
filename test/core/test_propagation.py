"""CSPN propagation against a direct per-pixel reference written here (plain Python loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depth_completion_ros.core.errors import ShapeError
from depth_completion_ros.core.propagation import (
    PAIR_OFFSETS,
    cspn_propagate,
    cspn_propagate_pairs,
    normalize_affinity,
)

OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def ref_normalize(raw: np.ndarray, normalization: str, d: int) -> np.ndarray:
    """(B,8,H,W) -> (B,8,H,W), per pixel: zero out-of-image weights, divide by max(Σ|w|, floor)."""
    B, _, H, W = raw.shape
    out = np.zeros_like(raw, dtype=np.float64)
    floor = 1.0 if normalization.endswith("_clamp") else 1e-6
    for b in range(B):
        for y in range(H):
            for x in range(W):
                w = []
                for k, (dy, dx) in enumerate(OFFSETS):
                    inside = 0 <= y + d * dy < H and 0 <= x + d * dx < W
                    v = float(raw[b, k, y, x]) if inside else 0.0
                    w.append(abs(v) if normalization.startswith("8sum_abs") else v)
                s = sum(abs(v) for v in w)
                for k in range(8):
                    out[b, k, y, x] = w[k] / max(s, floor)
    return out


def ref_propagate(h0, wn, n, sparse=None, conf=None, d=1, per_pixel=None, center=None):
    """Direct loops: H(t+1)(p) = Σ ŵk H(t)(p+d·ok) + (1−Σ ŵk) H0(p); out-of-image neighbours weight 0.

    `center`: optional (B, 1, H, W) weight of H0 used instead of 1−Σ ŵk.
    """
    B, _, H, W = h0.shape
    h = h0.astype(np.float64).copy()
    for t in range(n):
        new = np.zeros_like(h)
        for b in range(B):
            for y in range(H):
                for x in range(W):
                    acc, wsum = 0.0, 0.0
                    for k, (dy, dx) in enumerate(OFFSETS):
                        yy, xx = y + d * dy, x + d * dx
                        if 0 <= yy < H and 0 <= xx < W:
                            acc += wn[b, k, y, x] * h[b, 0, yy, xx]
                            wsum += wn[b, k, y, x]
                    c = (1.0 - wsum) if center is None else float(center[b, 0, y, x])
                    v = acc + c * h0[b, 0, y, x]
                    if sparse is not None and sparse[b, 0, y, x] > 0:
                        if conf is None:
                            v = float(sparse[b, 0, y, x])
                        else:
                            m = float(conf[b, 0, y, x])
                            v = m * sparse[b, 0, y, x] + (1 - m) * v
                    if per_pixel is not None and t >= per_pixel[b, 0, y, x]:
                        v = h[b, 0, y, x]
                    new[b, 0, y, x] = v
        h = new
    return h


def _inputs(rng, B=2, H=5, W=7, density=0.3):
    h0 = rng.uniform(1.0, 50.0, (B, 1, H, W)).astype(np.float32)
    raw = rng.normal(0.0, 1.0, (B, 8, H, W)).astype(np.float32)
    sparse = np.where(rng.random((B, 1, H, W)) < density, rng.uniform(1.0, 50.0, (B, 1, H, W)), 0.0)
    return h0, raw, sparse.astype(np.float32)


@pytest.mark.parametrize("normalization", ["8sum", "8sum_abs", "8sum_clamp", "8sum_abs_clamp"])
@pytest.mark.parametrize("use_sparse", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_matches_reference(rng, normalization, use_sparse, grad):
    h0, raw, sparse = _inputs(rng)
    wn = ref_normalize(raw, normalization, 1)
    expected = ref_propagate(h0, wn, 6, sparse if use_sparse else None)
    h0_t = torch.from_numpy(h0).requires_grad_(grad)
    out = cspn_propagate(
        h0_t,
        torch.from_numpy(raw),
        iterations=6,
        sparse=torch.from_numpy(sparse) if use_sparse else None,
        normalization=normalization,
    )
    assert out.shape == (2, 1, 5, 7)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-5 * 50)


@pytest.mark.parametrize("grad", [False, True])
def test_dilation_2(rng, grad):
    h0, raw, sparse = _inputs(rng, H=6, W=7)
    wn = ref_normalize(raw, "8sum_abs", 2)
    expected = ref_propagate(h0, wn, 5, sparse, d=2)
    out = cspn_propagate(
        torch.from_numpy(h0).requires_grad_(grad),
        torch.from_numpy(raw),
        iterations=5,
        sparse=torch.from_numpy(sparse),
        dilation=2,
    )
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=5e-4)


@pytest.mark.parametrize("grad", [False, True])
def test_per_pixel_iterations(rng, grad):
    h0, raw, sparse = _inputs(rng)
    iters = rng.integers(0, 6, (2, 1, 5, 7))
    wn = ref_normalize(raw, "8sum", 1)
    expected = ref_propagate(h0, wn, int(iters.max()), sparse, per_pixel=iters)
    out = cspn_propagate(
        torch.from_numpy(h0).requires_grad_(grad),
        torch.from_numpy(raw),
        iterations=torch.from_numpy(iters),
        sparse=torch.from_numpy(sparse),
        normalization="8sum",
    )
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=5e-4)
    zero = iters == 0
    np.testing.assert_array_equal(out.detach().numpy()[zero], h0[zero])


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("density", [0.3, 0.9])
def test_confidence_gated_replacement(rng, grad, density):
    h0, raw, sparse = _inputs(rng, density=density)
    conf = rng.random((2, 1, 5, 7)).astype(np.float32)
    wn = ref_normalize(raw, "8sum_abs", 1)
    expected = ref_propagate(h0, wn, 4, sparse, conf=conf)
    out = cspn_propagate(
        torch.from_numpy(h0),
        torch.from_numpy(raw).requires_grad_(grad),
        iterations=4,
        sparse=torch.from_numpy(sparse),
        sparse_confidence=torch.from_numpy(conf),
    )
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=5e-4)


@pytest.mark.parametrize("grad", [False, True])
def test_prenormalized_affinity_drops_out_of_image_mass(rng, grad):
    """normalized=True: the caller's weights are used as given; out-of-image weights go to the H0 term."""
    h0, raw, sparse = _inputs(rng)
    w = np.abs(raw) / (np.abs(raw).sum(1, keepdims=True) + 0.5)  # Σ < 1, non-zero at borders
    expected = ref_propagate(h0, w, 5, sparse)
    out = cspn_propagate(
        torch.from_numpy(h0).requires_grad_(grad),
        torch.from_numpy(w.astype(np.float32)),
        iterations=5,
        sparse=torch.from_numpy(sparse),
        normalized=True,
    )
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=5e-4)


@pytest.mark.parametrize("grad", [False, True])
def test_prenormalized_large_image_strip_path(rng, grad):
    """A size where the in-place path uses its border strip fix-up (H, W > 2·dilation), dilation 2."""
    h0, raw, sparse = _inputs(rng, B=1, H=9, W=11)
    w = np.abs(raw) / (np.abs(raw).sum(1, keepdims=True) + 0.25)
    expected = ref_propagate(h0, w, 3, sparse, d=2)
    out = cspn_propagate(
        torch.from_numpy(h0).requires_grad_(grad),
        torch.from_numpy(w.astype(np.float32)),
        iterations=3,
        sparse=torch.from_numpy(sparse),
        normalized=True,
        dilation=2,
    )
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=5e-4)


@pytest.mark.parametrize("grad", [False, True])
def test_given_center_weight_is_used(rng, grad):
    """center_weight replaces 1 − Σŵ as the weight of H0 (both paths); a wrong one changes the result."""
    h0, raw, sparse = _inputs(rng)
    w = np.abs(raw) / (np.abs(raw).sum(1, keepdims=True) + 0.5)
    center = (rng.random(h0.shape) * 0.5).astype(np.float32)  # deliberately not 1 − Σŵ
    expected = ref_propagate(h0, w, 4, sparse, center=center)
    out = cspn_propagate(
        torch.from_numpy(h0).requires_grad_(grad),
        torch.from_numpy(w.astype(np.float32)),
        iterations=4,
        sparse=torch.from_numpy(sparse),
        normalized=True,
        center_weight=torch.from_numpy(center),
    )
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=5e-4)
    assert np.abs(expected - ref_propagate(h0, w, 4, sparse)).max() > 1e-2
    with pytest.raises(ValueError, match="normalized"):
        cspn_propagate(
            torch.from_numpy(h0), torch.from_numpy(raw), iterations=1, center_weight=torch.from_numpy(center)
        )
    with pytest.raises(ShapeError):
        cspn_propagate(
            torch.from_numpy(h0),
            torch.from_numpy(w.astype(np.float32)),
            iterations=1,
            normalized=True,
            center_weight=torch.from_numpy(center[..., :-1]),
        )


@pytest.mark.parametrize("normalization", ["8sum", "8sum_abs", "8sum_clamp", "8sum_abs_clamp"])
def test_normalized_abs_sum_at_most_one(rng, normalization):
    raw = torch.from_numpy(rng.normal(0.0, 3.0, (2, 8, 6, 9)).astype(np.float32))
    raw[0, :, 2, 3] = 0.0  # all-zero affinity -> pixel keeps H0
    raw[1, :, 4, 4] = 1e-3  # tiny affinities
    w = normalize_affinity(raw, normalization)
    s = w.abs().sum(1)
    assert float(s.max()) <= 1.0 + 1e-6
    assert float(w[0, :, 2, 3].abs().sum()) == 0.0
    np.testing.assert_allclose(w.numpy(), ref_normalize(raw.numpy(), normalization, 1), rtol=1e-5, atol=1e-7)
    if not normalization.endswith("_clamp"):
        # paper normalization: Σ|ŵ| = 1 wherever some neighbour has weight
        np.testing.assert_allclose(s[0, 3:5, 3:5].numpy(), 1.0, rtol=1e-5)
    if normalization.startswith("8sum_abs"):
        assert float(w.min()) >= 0.0
    # corner (0, 0): neighbours up/left are out of the image and carry no weight
    assert float(w[:, [0, 1, 2, 3, 5], 0, 0].abs().sum()) == 0.0


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("density", [0.05, 0.6])
def test_sparse_inputs_preserved_exactly(rng, grad, density):
    H, W = 24, 31
    h0 = rng.uniform(0.1, 250.0, (1, 1, H, W)).astype(np.float32)
    sparse = np.where(rng.random((1, 1, H, W)) < density, rng.uniform(0.1, 250.0, (1, 1, H, W)), 0).astype(np.float32)
    raw = torch.from_numpy(rng.normal(size=(1, 8, H, W)).astype(np.float32)).requires_grad_(grad)
    out = cspn_propagate(torch.from_numpy(h0), raw, iterations=7, sparse=torch.from_numpy(sparse))
    valid = sparse > 0
    np.testing.assert_array_equal(out.detach().numpy()[valid], sparse[valid])


def test_constant_depth_is_a_fixed_point(rng):
    """Σ|ŵ| ≤ 1 and weights to H0 sum to one: a constant map stays constant (both normalizations)."""
    h0 = torch.full((1, 1, 13, 17), 7.25)
    for normalization in ("8sum", "8sum_abs"):
        raw = torch.from_numpy(rng.normal(size=(1, 8, 13, 17)).astype(np.float32))
        out = cspn_propagate(h0, raw, iterations=10, normalization=normalization)
        np.testing.assert_allclose(out.numpy(), 7.25, rtol=1e-5)


def test_gradcheck_float64(rng):
    B, H, W = 1, 4, 5
    h0 = torch.from_numpy(rng.uniform(1, 5, (B, 1, H, W))).requires_grad_(True)
    raw = torch.from_numpy(rng.normal(size=(B, 8, H, W))).requires_grad_(True)
    sparse = torch.from_numpy(np.where(rng.random((B, 1, H, W)) < 0.3, rng.uniform(1, 5, (B, 1, H, W)), 0.0))
    conf = torch.from_numpy(rng.uniform(0.1, 0.9, (B, 1, H, W))).requires_grad_(True)

    def f(h, a, c):
        return cspn_propagate(h, a, iterations=3, sparse=sparse, sparse_confidence=c, normalization="8sum")

    assert torch.autograd.gradcheck(f, (h0, raw, conf), eps=1e-6, atol=1e-5)

    def g(h, a):
        return cspn_propagate(h, a, iterations=3, sparse=sparse, dilation=2)

    assert torch.autograd.gradcheck(g, (h0, raw), eps=1e-6, atol=1e-5)


def test_batch_independence(rng):
    h0, raw, sparse = _inputs(rng, B=3, H=8, W=10)
    args = {"iterations": 5, "normalization": "8sum"}
    full = cspn_propagate(torch.from_numpy(h0), torch.from_numpy(raw), sparse=torch.from_numpy(sparse), **args)
    for b in range(3):
        one = cspn_propagate(
            torch.from_numpy(h0[b : b + 1]),
            torch.from_numpy(raw[b : b + 1]),
            sparse=torch.from_numpy(sparse[b : b + 1]),
            **args,
        )
        np.testing.assert_allclose(full[b : b + 1].numpy(), one.numpy(), rtol=1e-6, atol=1e-6)


def test_inplace_and_functional_paths_agree(rng):
    h0, raw, sparse = _inputs(rng, B=2, H=20, W=33)
    conf = rng.random((2, 1, 20, 33)).astype(np.float32)
    kw = {"iterations": 8, "sparse": torch.from_numpy(sparse), "sparse_confidence": torch.from_numpy(conf)}
    with torch.inference_mode():
        fast = cspn_propagate(torch.from_numpy(h0), torch.from_numpy(raw), **kw)
    slow = cspn_propagate(torch.from_numpy(h0), torch.from_numpy(raw).requires_grad_(True), **kw)
    np.testing.assert_allclose(fast.numpy(), slow.detach().numpy(), rtol=1e-5, atol=1e-4)


def test_inputs_not_modified(rng):
    h0, raw, sparse = _inputs(rng)
    t_h0, t_raw, t_s = torch.from_numpy(h0.copy()), torch.from_numpy(raw.copy()), torch.from_numpy(sparse.copy())
    cspn_propagate(t_h0, t_raw, iterations=3, sparse=t_s)
    w = normalize_affinity(t_raw)
    cspn_propagate(t_h0, w, iterations=3, sparse=t_s, normalized=True)
    np.testing.assert_array_equal(t_h0.numpy(), h0)
    np.testing.assert_array_equal(t_raw.numpy(), raw)
    np.testing.assert_array_equal(t_s.numpy(), sparse)


def test_zero_iterations_returns_h0(rng):
    h0, raw, sparse = _inputs(rng)
    out = cspn_propagate(torch.from_numpy(h0), torch.from_numpy(raw), iterations=0, sparse=torch.from_numpy(sparse))
    np.testing.assert_array_equal(out.numpy(), h0)


def test_half_inputs_propagate_in_float32(rng):
    h0, raw, _ = _inputs(rng)
    out = cspn_propagate(torch.from_numpy(h0).half(), torch.from_numpy(raw).half(), iterations=3)
    assert out.dtype == torch.float32
    expected = ref_propagate(
        h0.astype(np.float16).astype(np.float32), ref_normalize(raw.astype(np.float16), "8sum_abs", 1), 3
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-3)


def test_bad_inputs_raise():
    h0 = torch.ones(1, 1, 4, 4)
    aff = torch.ones(1, 8, 4, 4)
    with pytest.raises(ShapeError, match="affinity"):
        cspn_propagate(h0, torch.ones(1, 9, 4, 4), iterations=2)
    with pytest.raises(ShapeError, match="h0"):
        cspn_propagate(torch.ones(1, 4, 4), aff, iterations=2)
    with pytest.raises(ShapeError, match="sparse"):
        cspn_propagate(h0, aff, iterations=2, sparse=torch.ones(1, 1, 4, 5))
    with pytest.raises(ValueError, match="iterations"):
        cspn_propagate(h0, aff, iterations=-1)
    with pytest.raises(ShapeError, match="iterations"):
        cspn_propagate(h0, aff, iterations=torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="normalization"):
        cspn_propagate(h0, aff, iterations=2, normalization="softmax")
    with pytest.raises(ValueError, match="dilation"):
        cspn_propagate(h0, aff, iterations=2, dilation=0)
    with pytest.raises(ValueError, match="sparse_confidence"):
        cspn_propagate(h0, aff, iterations=2, sparse_confidence=torch.ones(1, 1, 4, 4))


def test_workspace_reuse_across_calls(rng):
    """The no-grad path reuses buffers between calls: sizes, dilations and sparse sets change between calls."""
    from depth_completion_ros.core.propagation import clear_workspace

    cases = [(9, 12, 1, 0.3), (9, 12, 2, 0.05), (5, 7, 1, 0.9), (9, 12, 1, 0.0), (9, 12, 1, 0.3)]
    for H, W, d, density in cases:
        h0, raw, sparse = _inputs(rng, B=1, H=H, W=W, density=density)
        with torch.inference_mode():
            fast = cspn_propagate(
                torch.from_numpy(h0), torch.from_numpy(raw), iterations=4, sparse=torch.from_numpy(sparse), dilation=d
            )
        expected = ref_propagate(h0, ref_normalize(raw, "8sum_abs", d), 4, sparse, d=d)
        np.testing.assert_allclose(fast.numpy(), expected, rtol=1e-5, atol=5e-4)
    clear_workspace()
    with torch.inference_mode():
        again = cspn_propagate(
            torch.from_numpy(h0), torch.from_numpy(raw), iterations=4, sparse=torch.from_numpy(sparse)
        )
    np.testing.assert_array_equal(again.numpy(), fast.numpy())


def test_result_is_not_overwritten_by_the_next_call(rng):
    h0, raw, _ = _inputs(rng)
    with torch.inference_mode():
        first = cspn_propagate(torch.from_numpy(h0), torch.from_numpy(raw), iterations=3)
        kept = first.clone()
        cspn_propagate(torch.from_numpy(h0 * 2), torch.from_numpy(raw), iterations=3)
    np.testing.assert_array_equal(first.numpy(), kept.numpy())


def _pair_inputs(rng, H, W, d, anchor):
    """Symmetric raw weights as 4 padded pair arrays, the matching (1, 8, H, W) anchored-normalized weights for the
    reference, and inv_norm."""
    pairs = np.zeros((4, H + 2 * d, W + 2 * d), np.float32)
    raw = np.zeros((1, 8, H, W), np.float64)
    for i, (dy, dx) in enumerate(PAIR_OFFSETS):
        for y in range(H):
            for x in range(W):
                if 0 <= y + d * dy < H and 0 <= x + d * dx < W:
                    w = rng.uniform(0.0, 1.0)
                    pairs[i, d + y, d + x] = w
                    raw[0, OFFSETS.index((dy, dx)), y, x] = w
                    raw[0, OFFSETS.index((-dy, -dx)), y + d * dy, x + d * dx] = w  # the same weight, seen from q
    den = raw.sum(axis=1, keepdims=True) + anchor
    inv_norm = (1.0 / den)[0, 0].astype(np.float32)
    return pairs, raw / den, inv_norm


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("density", [0.0, 0.2, 0.9])
def test_pairs_match_reference(rng, d, density):
    """Symmetric pair weights with anchored normalization = the CSPN update with ŵ = w / (Σw + anchor)."""
    H, W, anchor = 9, 11, 0.7
    pairs, wn, inv_norm = _pair_inputs(rng, H, W, d, anchor)
    h0 = rng.uniform(1.0, 50.0, (H, W)).astype(np.float32)
    sparse = np.where(rng.random((H, W)) < density, rng.uniform(1.0, 50.0, (H, W)), 0.0).astype(np.float32)
    expected = ref_propagate(h0[None, None], wn, 5, sparse[None, None] if density else None, d=d)[0, 0]
    out = cspn_propagate_pairs(
        h0, pairs, inv_norm, anchor=anchor, iterations=5, sparse=sparse if density else None, dilation=d
    )
    assert out.shape == (H, W) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=5e-4)
    if density:
        np.testing.assert_array_equal(out[sparse > 0], sparse[sparse > 0])  # measurements kept exactly
    if d == 1:  # the result written into a given array: the same values, that array returned
        given = np.full((H, W), np.nan, np.float32)
        res = cspn_propagate_pairs(
            h0, pairs, inv_norm, anchor=anchor, iterations=5, sparse=sparse if density else None, out=given
        )
        assert res is given
        np.testing.assert_array_equal(given, out)


def test_pairs_agree_with_cspn_propagate_on_expanded_weights(rng):
    """The pair form and the general operator (8 normalized channels + centre weight) give the same depth."""
    from depth_completion_ros.core.affinity import anchored_pair_affinity

    rgb = rng.integers(0, 255, (40, 57, 3), dtype=np.uint8)
    aff = anchored_pair_affinity(rgb, anchor=0.5, sigma=20.0, sigma_scale=1.0)
    h0 = rng.uniform(1.0, 80.0, (40, 57)).astype(np.float32)
    sparse = np.where(rng.random((40, 57)) < 0.05, h0 * 1.1, 0.0).astype(np.float32)
    w, centre = aff.expanded()
    general = cspn_propagate(
        torch.from_numpy(h0)[None, None],
        torch.from_numpy(w)[None],
        iterations=4,
        sparse=torch.from_numpy(sparse)[None, None],
        normalized=True,
        center_weight=torch.from_numpy(centre)[None, None],
    )[0, 0].numpy()
    pair = cspn_propagate_pairs(h0, aff.pairs, aff.inv_norm, anchor=aff.anchor, iterations=4, sparse=sparse)
    np.testing.assert_allclose(pair, general, rtol=2e-6, atol=1e-5)


def test_pairs_zero_iterations_and_inputs_unchanged(rng):
    pairs, _, inv_norm = _pair_inputs(rng, 6, 8, 1, 0.5)
    h0 = rng.uniform(1.0, 50.0, (6, 8)).astype(np.float32)
    before = (h0.copy(), pairs.copy(), inv_norm.copy())
    out = cspn_propagate_pairs(h0, pairs, inv_norm, anchor=0.5, iterations=0)
    np.testing.assert_array_equal(out, h0)
    assert out is not h0
    cspn_propagate_pairs(h0, pairs, inv_norm, anchor=0.5, iterations=3)
    for a, b in zip(before, (h0, pairs, inv_norm), strict=True):
        np.testing.assert_array_equal(a, b)


def test_pairs_bad_inputs_raise(rng):
    pairs, _, inv_norm = _pair_inputs(rng, 6, 8, 1, 0.5)
    h0 = np.ones((6, 8), np.float32)
    with pytest.raises(ShapeError, match="pairs"):
        cspn_propagate_pairs(h0, pairs[:, 1:], inv_norm, anchor=0.5, iterations=1)
    with pytest.raises(ShapeError, match="pairs"):
        cspn_propagate_pairs(h0, pairs, inv_norm, anchor=0.5, iterations=1, dilation=2)
    with pytest.raises(ShapeError, match="inv_norm"):
        cspn_propagate_pairs(h0, pairs, inv_norm[:-1], anchor=0.5, iterations=1)
    with pytest.raises(ShapeError, match="sparse"):
        cspn_propagate_pairs(h0, pairs, inv_norm, anchor=0.5, iterations=1, sparse=np.ones((6, 7), np.float32))
    with pytest.raises(ShapeError, match="h0"):
        cspn_propagate_pairs(h0.astype(np.float64), pairs, inv_norm, anchor=0.5, iterations=1)
    with pytest.raises(ValueError, match="iterations"):
        cspn_propagate_pairs(h0, pairs, inv_norm, anchor=0.5, iterations=-1)
    with pytest.raises(ValueError, match="dilation"):
        cspn_propagate_pairs(h0, pairs, inv_norm, anchor=0.5, iterations=1, dilation=0)
    with pytest.raises(ValueError, match="anchor"):
        cspn_propagate_pairs(h0, pairs, inv_norm, anchor=-1.0, iterations=1)
    with pytest.raises(ShapeError, match="out"):
        cspn_propagate_pairs(h0, pairs, inv_norm, anchor=0.5, iterations=1, out=np.empty((6, 7), np.float32))
    with pytest.raises(ShapeError, match="out"):
        cspn_propagate_pairs(h0, pairs, inv_norm, anchor=0.5, iterations=1, out=np.empty((6, 8), np.float64))


@pytest.mark.parametrize("density", [0.3, 0.9])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("d", [1, 2])
def test_torch_inplace_path_matches_reference(rng, density, gated, d):
    """The shifted-slice torch path (CUDA's; float64 on the CPU) against the reference: index and dense replacement,
    with and without the CSPN++ gate, dilation 1 and 2.  (CPU float32 takes the fused numba path.)"""
    h0, raw, sparse = _inputs(rng, H=6, W=9, density=density)
    conf = rng.uniform(0.0, 1.0, sparse.shape).astype(np.float32) if gated else None
    expected = ref_propagate(h0, ref_normalize(raw, "8sum_abs", d), 4, sparse, conf, d=d)
    with torch.no_grad():
        out = cspn_propagate(
            torch.from_numpy(h0).double(),
            torch.from_numpy(raw).double(),
            iterations=4,
            sparse=torch.from_numpy(sparse).double(),
            sparse_confidence=None if conf is None else torch.from_numpy(conf).double(),
            dilation=d,
        )
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-5)  # (the reference gates in float32)


@pytest.mark.parametrize("normalization", ["8sum", "8sum_abs", "8sum_clamp", "8sum_abs_clamp"])
@pytest.mark.parametrize("d", [1, 3])
def test_fused_cpu_path_matches_torch_path(rng, d, normalization):
    """CPU float32 (numba, normalization included) and the torch path on the same raw inputs, batch of 2, gated
    replacement."""
    h0, raw, sparse = _inputs(rng, B=2, H=23, W=31, density=0.2)
    raw[:, :, 5:9, 7:12] *= 1e-7  # tiny weights: the clamp variants keep mass on H0 there
    conf = rng.uniform(0.0, 1.0, sparse.shape).astype(np.float32)
    args = {"iterations": 6, "dilation": d, "normalization": normalization}
    with torch.no_grad():
        fused = cspn_propagate(
            torch.from_numpy(h0),
            torch.from_numpy(raw),
            sparse=torch.from_numpy(sparse),
            sparse_confidence=torch.from_numpy(conf),
            **args,
        )
        torch_path = cspn_propagate(
            torch.from_numpy(h0).double(),
            torch.from_numpy(raw).double(),
            sparse=torch.from_numpy(sparse).double(),
            sparse_confidence=torch.from_numpy(conf).double(),
            **args,
        )
    assert fused.dtype == torch.float32
    np.testing.assert_allclose(fused.numpy(), torch_path.numpy(), rtol=1e-5, atol=1e-4)
