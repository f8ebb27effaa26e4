"""The CSPN paper's NYU model (`core/published/cspn_nyu.py`): format, key map, any size, the propagation mapping."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from depth_completion_ros.core.errors import CalibrationError, ShapeError
from depth_completion_ros.core.propagation import NEIGHBOUR_OFFSETS, cspn_propagate, normalize_affinity
from depth_completion_ros.core.published.cspn_nyu import (
    ARCHITECTURE,
    CSPNNYUConfig,
    CSPNNYUNet,
    PackedConv,
    _subpixel_kernels,
    authors_key,
    authors_to_gather,
    conv2d,
    packed_subpixel,
    resample_sparse,
    unpool2,
    unpool_conv,
    unpool_conv_packed,
)

MANIFESTS = Path(__file__).resolve().parents[2] / "depth_completion_ros" / "core" / "published" / "manifests"


def _manifest(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((MANIFESTS / name).read_text()).items()}


@pytest.fixture(scope="module")
def net() -> CSPNNYUNet:
    """One model with random weights and non-trivial BatchNorm statistics (built once: ~220 M parameters)."""
    torch.manual_seed(0)
    model = CSPNNYUNet(CSPNNYUConfig(input_scaling="none"))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def _inputs(H: int, W: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (1, 3, H, W), generator=g).float()
    sparse = (torch.rand(1, 1, H, W, generator=g) < 0.05) * (0.5 + 5 * torch.rand(1, 1, H, W, generator=g))
    return rgb, sparse


# -- format --------------------------------------------------------------------------------------------------


def test_model_matches_manifest() -> None:
    with torch.device("meta"):
        model = ARCHITECTURE.build(ARCHITECTURE.default_config)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == _manifest(ARCHITECTURE.manifest)


def test_synthetic_state_dict_from_manifest_loads_and_runs() -> None:
    g = torch.Generator().manual_seed(5)
    state = {
        k: torch.rand(shape, generator=g) + 1.0 if k.endswith("running_var") else 0.1 * torch.rand(shape, generator=g)
        for k, shape in _manifest("cspn_nyu.json").items()
    }
    model = CSPNNYUNet(CSPNNYUConfig(input_scaling="none"))
    model.load_state_dict(state, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    rgb, sparse = _inputs(19, 26)
    with torch.inference_mode():
        out = model(rgb, sparse)
    assert out["pred"].shape == (1, 1, 19, 26)
    assert torch.isfinite(out["pred"]).all()
    del model


def test_authors_key_maps_every_authors_key_onto_ours() -> None:
    theirs = _manifest("cspn_nyu_authors.json")
    ours = _manifest("cspn_nyu.json")
    mapped: dict[str, tuple[int, ...]] = {}
    dropped = []
    for key, shape in theirs.items():
        name = authors_key(key)
        if name is None:
            dropped.append(key)
            continue
        assert name not in mapped, f"two authors' keys map to {name}"
        mapped[name] = shape
    assert mapped == ours  # every our key exactly once, with the authors' shape
    for key in dropped:  # only what the network never uses
        assert key.endswith(".num_batches_tracked") or key.startswith(
            ("up_proj_layer", "conv3.", "post_process_layer.")
        )
    assert "post_process_layer.sum_conv.weight" in dropped
    # DataParallel prefix is the importer's job; unknown keys come back unchanged (so they are refused as unexpected)
    assert authors_key("gud_up_proj_layer2.conv1_1.weight") == "up2.fuse_conv.weight"
    assert authors_key("not_a_layer.weight") == "not_a_layer.weight"
    assert authors_key("gud_up_proj_layer5.bn1.weight") == "gud_up_proj_layer5.bn1.weight"


def test_architecture_registration() -> None:
    assert ARCHITECTURE.name == "cspn-nyu"
    assert ARCHITECTURE.needs_intrinsics is False
    assert ARCHITECTURE.stride == 1
    cfg = ARCHITECTURE.config_from_dict(ARCHITECTURE.default_config.to_dict())
    assert cfg == ARCHITECTURE.default_config


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"normalization": "8sum_clamp"}, "normalization"),
        ({"iterations": 1000}, "iterations"),
        ({"iterations": 2.0}, "iterations"),
        ({"iterations": True}, "iterations"),
        ({"input_scaling": "x"}, "input_scaling"),
        ({"short_side": 4}, "short_side"),
        ({"focal_px": float("nan")}, "focal_px"),
        ({"rgb_uint8_wrap": 1}, "rgb_uint8_wrap"),
        ({"authors_reimpose": "yes"}, "authors_reimpose"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_config_from_dict_rejects_naming_the_field(data: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CSPNNYUConfig.from_dict(data)


# -- any size ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("H", "W"), [(1, 1), (17, 23), (37, 53), (64, 48), (33, 100)])
def test_any_input_size_gives_the_input_size(net: CSPNNYUNet, H: int, W: int) -> None:
    rgb, sparse = _inputs(H, W)
    with torch.inference_mode():
        out = net(rgb, sparse)
    assert out["pred"].shape == (1, 1, H, W)
    assert out["confidence"] is None
    assert torch.isfinite(out["pred"]).all() and (out["pred"] >= 0).all()
    valid = sparse > 0
    assert torch.equal(out["pred"][valid], sparse[valid])  # measurements re-imposed (our semantics)


def test_input_scaling_runs_at_the_training_scale_and_returns_the_input_size(net: CSPNNYUNet) -> None:
    old = net.config
    try:
        net.config = dataclasses.replace(old, input_scaling="auto", short_side=24)
        assert net.network_scale(48, 64, None) == pytest.approx(0.5)
        K = torch.tensor([[[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]]])
        assert net.network_scale(48, 64, K) == pytest.approx(old.focal_px / 100.0)
        rgb, sparse = _inputs(49, 65)
        with torch.inference_mode():
            pred = net(rgb, sparse)["pred"]
        assert pred.shape == (1, 1, 49, 65)
        assert torch.equal(pred[sparse > 0], sparse[sparse > 0])
        K_tiny = torch.tensor([[[1.0, 0, 32], [0, 1.0, 24], [0, 0, 1]]])  # x259: bounded, refused before compute
        with pytest.raises(ShapeError, match="at most"):
            net(rgb, sparse, K_tiny)
        net.config = dataclasses.replace(old, input_scaling="focal")
        with pytest.raises(CalibrationError, match="needs the intrinsics"):
            net(rgb, sparse)
    finally:
        net.config = old


def test_resample_sparse_keeps_the_nearest_measurement_per_cell() -> None:
    s = torch.zeros(1, 1, 4, 4)
    s[0, 0, 0, 0], s[0, 0, 1, 1], s[0, 0, 3, 2] = 5.0, 3.0, 7.0
    out = resample_sparse(s, (2, 2))
    assert out[0, 0].tolist() == [[3.0, 0.0], [0.0, 7.0]]


# -- preprocessing -------------------------------------------------------------------------------------------


def test_rgb_encoding_reproduces_the_loaders_uint8_round_trip(net: CSPNNYUNet) -> None:
    rgb = torch.zeros(1, 3, 1, 1)
    rgb[0, :, 0, 0] = torch.tensor([0.0, 255.0, 124.0])
    enc = net.encode_rgb(rgb)[0, :, 0, 0]
    # by hand: n = (x / 255 - mean) / std, then trunc(255 n) mod 256, / 255
    expected = []
    for x, m, s in zip([0.0, 255.0, 124.0], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], strict=True):
        n = np.float32((np.float32(x / 255) - np.float32(m)) / np.float32(s))
        expected.append((np.trunc(np.float32(n * 255)) % 256) / 255)
    assert enc.tolist() == pytest.approx(expected, abs=1e-6)
    assert expected[0] == pytest.approx(228 / 255)  # -540.07 -> -540 -> 228 (wraps)
    old = net.config
    try:
        net.config = dataclasses.replace(old, rgb_uint8_wrap=False)
        assert net.encode_rgb(rgb)[0, 0, 0, 0].item() == pytest.approx(-0.485 / 0.229, abs=1e-5)
    finally:
        net.config = old


# -- inference path ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize(("h", "w", "size"), [(4, 5, (8, 10)), (4, 5, (7, 9)), (1, 1, (1, 2))])
def test_subpixel_unpool_conv_equals_conv_of_the_unpooled_map(k: int, h: int, w: int, size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 3, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    ref = F.conv2d(unpool2(x, size), weight, bias, padding=k // 2)
    got = unpool_conv(x, _subpixel_kernels(weight), bias, size)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("k", "stride", "padding", "size"), [(3, 1, 1, (8, 10)), (3, 2, 1, (15, 19)), (2, 1, 0, (5, 3))]
)
def test_small_map_convolution_as_gemm_equals_conv2d(k: int, stride: int, padding: int, size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(k + stride)
    x = torch.randn(2, 6, *size, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 6, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    ref = F.conv2d(x, weight, bias, stride, padding)
    assert ref.shape[-2] * ref.shape[-1] <= 128  # the GEMM branch
    torch.testing.assert_close(conv2d(x, weight, bias, stride, padding), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("k", "stride", "padding", "size"), [(3, 1, 1, (9, 11)), (3, 2, 1, (15, 19)), (1, 2, 0, (6, 7))]
)
def test_packed_convolution_equals_conv2d(k, stride, padding, size, channels_last) -> None:
    g = torch.Generator().manual_seed(k + stride)
    x = torch.randn(2, 6, *size, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(5, 6, k, k, generator=g), torch.randn(5, generator=g)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), stride, padding)
    conv = PackedConv(lambda: (weight, bias), stride, padding)
    torch.testing.assert_close(conv(x).double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv(x.double()), ref, rtol=1e-12, atol=1e-12)  # float64: the plain path


@pytest.mark.parametrize("k", [3, 5])
def test_packed_subpixel_unpool_conv_equals_conv_of_the_unpooled_map(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    x = torch.randn(1, 3, 4, 5, generator=g)
    weight, bias = torch.randn(4, 3, k, k, generator=g), torch.randn(4, generator=g)
    ref = F.conv2d(unpool2(x, (7, 9)).double(), weight.double(), bias.double(), padding=k // 2)
    got = unpool_conv_packed(x, packed_subpixel(lambda: (weight, bias)), (7, 9))
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


def test_fused_inference_path_equals_the_plain_path(net: CSPNNYUNet) -> None:
    rgb, sparse = _inputs(45, 61, seed=3)
    x = net.encode_rgb(rgb)
    with torch.no_grad():  # eval, no autograd: folded BatchNorms, sub-pixel convolutions
        fast = net.run_network(x, sparse)
    with torch.enable_grad():
        plain = net.run_network(x, sparse).detach()
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())
    net.to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            cl = net.run_network(x, sparse)
    finally:
        net.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(cl, plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())


# -- the authors' propagation convention onto ours -----------------------------------------------------------


def _authors_reference(
    guidance: np.ndarray, h0: np.ndarray, sparse: np.ndarray, steps: int, use_abs: bool
) -> np.ndarray:
    """Per-pixel statement of the authors' CSPN: raw channel k stored at the *sending* pixel q; pixel p receives
    from q = p - o_k with weight g_k(q) / Σ_k' |g_k'(p - o_k')| (neighbours outside count 0), keeps
    (1 - Σ ŵ) of H0, and is reset to H0 (not the measurement) where sparse > 0."""
    _, H, W = guidance.shape
    g = np.abs(guidance) if use_abs else guidance
    w = np.zeros((8, H, W))
    for y in range(H):
        for x in range(W):
            for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
                qy, qx = y - dy, x - dx
                if 0 <= qy < H and 0 <= qx < W:
                    w[k, y, x] = g[k, qy, qx]
    w /= np.abs(w).sum(0, keepdims=True)
    h = h0.copy()
    for _ in range(steps):
        new = (1 - w.sum(0)) * h0
        for y in range(H):
            for x in range(W):
                for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
                    qy, qx = y - dy, x - dx
                    if 0 <= qy < H and 0 <= qx < W:
                        new[y, x] += w[k, y, x] * h[qy, qx]
        h = np.where(sparse > 0, h0, new)
    return h


def test_authors_to_gather_moves_a_weight_to_the_receiving_pixel() -> None:
    for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        raw = torch.zeros(1, 8, 5, 5)
        raw[0, k, 2, 2] = 1.0  # their channel k at the sender q = (2, 2): q sends to p = q + o_k
        ours = authors_to_gather(raw)
        nz = torch.nonzero(ours[0])
        assert nz.tolist() == [[7 - k, 2 + dy, 2 + dx]]  # ours: channel 7 - k at p, neighbour p + o_(7-k) = q


@pytest.mark.parametrize("normalization", ["8sum", "8sum_abs"])
def test_authors_propagation_maps_onto_ours(normalization: str) -> None:
    rng = np.random.default_rng(7)
    H, W, steps = 5, 7, 6
    guidance = rng.normal(size=(8, H, W))
    h0 = rng.uniform(0.5, 5.0, size=(H, W))
    sparse = np.where(rng.uniform(size=(H, W)) < 0.2, rng.uniform(1.0, 4.0, size=(H, W)), 0.0)
    ref = _authors_reference(guidance, h0, sparse, steps, normalization == "8sum_abs")

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]  # noqa: E731
    aff = normalize_affinity(authors_to_gather(t(guidance)), normalization)
    aff_theirs = aff * t(sparse <= 0)[:, None].double()  # their re-imposition of H0: no update at sparse pixels
    ours = cspn_propagate(t(h0)[:, None], aff_theirs, iterations=steps, normalized=True)
    np.testing.assert_allclose(ours[0, 0].numpy(), ref, rtol=1e-10, atol=1e-10)

    # our semantics: the measurement is re-imposed; away from sparse pixels the first step is the same
    correct = cspn_propagate(t(h0)[:, None], aff, iterations=1, sparse=t(sparse)[:, None], normalized=True)
    ref1 = _authors_reference(guidance, h0, np.zeros_like(sparse), 1, normalization == "8sum_abs")
    valid = sparse > 0
    np.testing.assert_allclose(correct[0, 0].numpy()[~valid], ref1[~valid], rtol=1e-10)
    np.testing.assert_array_equal(correct[0, 0].numpy()[valid], sparse[valid])


def test_model_authors_reimpose_keeps_h0_at_sparse_pixels(net: CSPNNYUNet) -> None:
    rgb, sparse = _inputs(21, 30, seed=4)
    x = net.encode_rgb(rgb)
    old = net.config
    try:
        net.config = dataclasses.replace(old, authors_reimpose=True, iterations=0)
        with torch.inference_mode():
            h0 = net.run_network(x, sparse)
        net.config = dataclasses.replace(old, authors_reimpose=True)
        with torch.inference_mode():
            theirs = net.run_network(x, sparse)
    finally:
        net.config = old
    with torch.inference_mode():
        ours = net(rgb, sparse)["pred"]
    valid = sparse > 0
    assert torch.equal(theirs[valid], h0[valid])  # the authors' defect, reproduced on request
    assert torch.equal(ours[valid], sparse[valid])  # our default: the measurement
