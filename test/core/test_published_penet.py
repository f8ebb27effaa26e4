"""PENet / ENet: committed manifests, the authors' key map, configuration bounds, the geometric encoding, padding."""

from __future__ import annotations

import math

import pytest
import torch

from depth_completion_ros.core import winograd
from depth_completion_ros.core.errors import ShapeError
from depth_completion_ros.core.published import penet
from depth_completion_ros.core.published.base import ARCHITECTURES, load_manifest, state_manifest

NAMES = ("enet", "penet")
# authors' keys we drop: PENet's fixed kernel-flip convolutions and its training model's no-op attention fusion
DROPPED = {"encoder3", "encoder5", "encoder7"}
DROPPED_PREFIXES = ("dimhalf_s2.", "att_12.")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {n: ARCHITECTURES[n].build(ARCHITECTURES[n].default_config) for n in NAMES}


def _inputs(H: int, W: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(1, 3, H, W, generator=g) * 255
    sparse = (torch.rand(1, 1, H, W, generator=g) < 0.05) * (torch.rand(1, 1, H, W, generator=g) * 70 + 2)
    K = torch.tensor([[[721.5, 0.0, W / 2], [0.0, 721.5, H / 2], [0.0, 0.0, 1.0]]])
    return rgb, sparse, K


@pytest.mark.parametrize("name", NAMES)
def test_registered(name):
    arch = ARCHITECTURES[name]
    assert arch.needs_intrinsics and arch.stride == 32
    assert arch.config_from_dict(arch.default_config.to_dict()) == arch.default_config


@pytest.mark.parametrize("name", NAMES)
def test_built_model_matches_committed_manifest(models, name):
    assert state_manifest(models[name]) == load_manifest(ARCHITECTURES[name].manifest)


@pytest.mark.parametrize("name", NAMES)
def test_synthetic_state_from_manifest_loads_and_runs(name):
    arch = ARCHITECTURES[name]
    g = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in load_manifest(arch.manifest).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    model = arch.build(arch.default_config)
    model.load_state_dict(state, strict=True)
    with torch.inference_mode():
        out = model(*_inputs(64, 96))
    assert out["confidence"] is None
    assert out["pred"].shape == (1, 1, 64, 96) and torch.isfinite(out["pred"]).all() and (out["pred"] >= 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_authors_key_maps_every_authors_key_onto_ours(name):
    """Every authors' key maps to one of ours with the same shape or is a documented drop; every key of ours is
    hit exactly once (with and without DataParallel's "module." prefix stripped by the caller)."""
    arch = ARCHITECTURES[name]
    ours = load_manifest(arch.manifest)
    theirs = load_manifest(f"{name}_authors.json")
    hits: dict[str, str] = {}
    for key, shape in theirs.items():
        mapped = arch.authors_key(key)
        if mapped is None:
            assert name == "penet" and (key in DROPPED or key.startswith(DROPPED_PREFIXES)), key
            continue
        assert mapped in ours, f"{key} -> {mapped}"
        assert ours[mapped] == shape, key
        assert mapped not in hits, f"{key} and {hits.get(mapped)} both map to {mapped}"
        hits[mapped] = key
    assert set(hits) == set(ours)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_authors_keys_never_match_ours(name):
    arch = ARCHITECTURES[name]
    ours = load_manifest(arch.manifest)
    for key in ("backbone.rgb_stem.conv.weight", "rgb_encoder_layer11.conv1.weight", "foo", "mask_layer.2.weight",
                "iter_guide_layer3.0.weight", "kernel_conf_layer.generate.0.weight"):  # fmt: skip
        mapped = arch.authors_key(key)
        assert mapped is not None and mapped not in ours, key


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"iterations": 10**9}, "iterations"),
        ({"iterations": -1}, "iterations"),
        ({"iterations": 6.0}, "iterations"),
        ({"iterations": True}, "iterations"),
        ({"cy_shift_px": float("nan")}, "cy_shift_px"),
        ({"cy_shift_px": "11.5"}, "cy_shift_px"),
        ({"coord_height": 1}, "coord_height"),
        ({"coord_width": 10**7}, "coord_width"),
        ({"layers": 5}, "layers"),
    ],
)
def test_config_refuses_out_of_bounds(data, field):
    with pytest.raises(ValueError, match=field):
        penet.PENetConfig.from_dict(data)


def test_enet_config_has_no_iterations():
    with pytest.raises(ValueError, match="iterations"):
        penet.ENetConfig.from_dict({"iterations": 6})
    assert penet.ENetConfig.from_dict({"cy_shift_px": 0}).cy_shift_px == 0.0


def test_geometric_encoding_is_the_documented_formula():
    cfg = penet.ENetConfig()
    H, W = 64, 96
    g = torch.Generator().manual_seed(3)
    sparse = (torch.rand(2, 1, H, W, generator=g) < 0.3) * (torch.rand(2, 1, H, W, generator=g) * 50 + 1)
    K = torch.tensor([[[700.0, 0, 40.0], [0, 710.0, 30.0], [0, 0, 1]], [[500.0, 0, 50.0], [0, 505.0, 20.0], [0, 0, 1]]])
    levels = penet.geometric_encoding(sparse, K, cfg)
    z = sparse
    for s, geo in enumerate(levels):
        if s:  # closest valid depth of each 2×2 block, 0 where none
            blocks = z.reshape(2, 1, z.shape[2] // 2, 2, z.shape[3] // 2, 2)
            far = torch.where(blocks > 0, blocks, torch.full_like(blocks, math.inf)).amin(dim=(3, 5))
            z = torch.where(torch.isfinite(far), far, torch.zeros_like(far))
        h, w = z.shape[-2:]
        i = torch.arange(h, dtype=torch.float64)[:, None]
        j = torch.arange(w, dtype=torch.float64)[None, :]
        v = 352 / 351 * (i + (2**s - 1) / 2 ** (s + 1))
        u = 1216 / 1215 * (j + (2**s - 1) / 2 ** (s + 1))
        for b in range(2):
            fx, fy, cx, cy = K[b, 0, 0], K[b, 1, 1], K[b, 0, 2], K[b, 1, 2] + 11.5
            zz = z[b, 0].double()
            torch.testing.assert_close(geo[b, 2].double(), zz)
            torch.testing.assert_close(geo[b, 0].double(), zz * (v - cy) / fy, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(geo[b, 1].double(), zz * (u - cx) / fx, rtol=1e-5, atol=1e-4)


def test_padding_keeps_the_original_pixels_encoding():
    """Bottom / right padding: the encoding of every original pixel equals the unpadded one (levels that divide)."""
    cfg = penet.ENetConfig()
    _rgb, sparse, K = _inputs(64, 96, seed=5)
    small = penet.geometric_encoding(sparse, K, cfg)
    padded = penet.geometric_encoding(torch.nn.functional.pad(sparse, (0, 32, 0, 32)), K, cfg)
    for s in range(6):
        h, w = small[s].shape[-2:]
        torch.testing.assert_close(padded[s][..., :h, :w], small[s])


@pytest.mark.parametrize("name", NAMES)
def test_any_size_and_k_required(models, name):
    model = models[name]
    rgb, sparse, K = _inputs(37, 50)
    with torch.inference_mode():
        out = model(rgb, sparse, K)
    assert out["pred"].shape == (1, 1, 37, 50)
    with pytest.raises(ShapeError, match="K"):
        model(rgb, sparse, None)
    with pytest.raises(ShapeError, match="sparse"):
        model(rgb, sparse[..., :-1], K)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "options", [{}, {"channels_last": True}, {"mkldnn": False}, {"winograd_channels": 0}, {"winograd_channels": 512}]
)
def test_prepare_for_inference_keeps_output(name, options):
    arch = ARCHITECTURES[name]
    torch.manual_seed(4)
    model = arch.build(arch.default_config)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    rgb, sparse, K = _inputs(64, 96, seed=6)
    with torch.inference_mode():
        before = model.infer(rgb, sparse, K)
        penet.prepare_for_inference(model, **options)
        after = model.infer(rgb, sparse, K)
        again = model.infer(rgb, sparse, K)  # prepacked weights reused
    winograd_layers = [m for m in model.modules() if isinstance(m, penet._ConvBN) and m._winograd]
    expect_winograd = options.get("mkldnn", True) and options.get("winograd_channels", 1024) > 0
    assert bool(winograd_layers) == (expect_winograd and winograd.available())
    heads = [model.backbone.rgb_head, model.backbone.depth_head]
    assert all(bool(h._narrow) == (options.get("mkldnn", True) and winograd.available()) for h in heads)
    scale = float(before.abs().max())
    assert scale > 0
    assert float((before - after).abs().max()) <= 1e-4 * max(scale, 1.0)
    torch.testing.assert_close(again, after)


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single_frames_with_their_own_k(models, name):
    model = models[name]
    rgb1, sparse1, K1 = _inputs(64, 96, seed=8)
    rgb2, sparse2, K2 = _inputs(64, 96, seed=9)
    K2 = K2.clone()
    K2[0, 0, 0] = K2[0, 1, 1] = 500.0
    with torch.inference_mode():
        both = model.infer(torch.cat((rgb1, rgb2)), torch.cat((sparse1, sparse2)), torch.cat((K1, K2)))
        one = model.infer(rgb1, sparse1, K1)
        two = model.infer(rgb2, sparse2, K2)
    torch.testing.assert_close(both, torch.cat((one, two)), rtol=1e-4, atol=1e-4)
