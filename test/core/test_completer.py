"""Tests of core/completer.py: validation, the default method on synthetic and real data, confidence."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch

from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
from depth_completion_ros.core.errors import CheckpointError, DataError, ShapeError
from depth_completion_ros.core.fill import ip_basic_fill, nearest_fill
from depth_completion_ros.core.metrics import compute_metrics, sparsification


def _scene(rng, h=96, w=128):
    """Two regions split by an RGB-visible slanted boundary, with different depths."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    fg = xx < 50 + 0.4 * yy
    gt = np.where(fg, 6.0 + 0.01 * yy, 25.0 + 0.03 * xx).astype(np.float32)
    rgb = np.where(fg[..., None], np.array([200, 60, 40], np.uint8), np.array([30, 90, 210], np.uint8))
    rgb = np.clip(rgb + rng.integers(-6, 7, rgb.shape), 0, 255).astype(np.uint8)
    sp = np.zeros_like(gt)
    sp[2::6, 1::4] = gt[2::6, 1::4]
    return rgb, sp, gt


class TestValidation:
    def test_size_mismatch(self):
        c = DepthCompleter()
        with pytest.raises(ShapeError, match="size"):
            c.complete(np.zeros((10, 12, 3), np.uint8), np.ones((10, 11), np.float32))

    def test_dtype(self):
        c = DepthCompleter()
        with pytest.raises(ShapeError, match="uint8"):
            c.complete(np.zeros((10, 12, 3), np.float32), np.ones((10, 12), np.float32))
        with pytest.raises(ShapeError, match="float"):
            c.complete(np.zeros((10, 12, 3), np.uint8), np.ones((10, 12), np.uint16))

    def test_empty_sparse(self):
        c = DepthCompleter()
        sp = np.full((10, 12), np.nan, np.float32)
        with pytest.raises(DataError, match="no valid"):
            c.complete(np.zeros((10, 12, 3), np.uint8), sp)

    def test_cspn_without_checkpoint(self):
        with pytest.raises(CheckpointError, match="checkpoint"):
            DepthCompleter(CompleterConfig(method="cspn"))

    def test_cspn_missing_checkpoint_file(self, tmp_path):
        with pytest.raises(CheckpointError, match="not found"):
            DepthCompleter(CompleterConfig(method="cspn", checkpoint=tmp_path / "nope.safetensors"))

    def test_bad_method_and_device(self):
        with pytest.raises(ValueError, match="method"):
            DepthCompleter(CompleterConfig(method="magic"))
        with pytest.raises(ValueError, match="device"):
            DepthCompleter(CompleterConfig(method="cspn", device="tpu", allow_random_weights=True))

    def test_properties(self):
        c = DepthCompleter()
        assert c.method == "default"
        assert c.device.type == "cpu"
        assert "weight-free" in c.model_name


def test_default_synthetic(rng):
    rgb, sp, gt = _scene(rng)
    depth, conf = DepthCompleter().complete(rgb, sp)
    assert depth.shape == gt.shape and depth.dtype == np.float32 and (depth > 0).all()
    assert conf.dtype == np.float32 and conf.min() >= 0 and conf.max() <= 1
    m = sp > 0
    np.testing.assert_array_equal(depth[m], sp[m])
    assert (conf[m] == 1).all()
    ours = compute_metrics(depth, gt)
    assert ours.rmse_mm < compute_metrics(nearest_fill(sp), gt).rmse_mm
    assert ours.rmse_mm < compute_metrics(ip_basic_fill(sp), gt).rmse_mm
    assert sparsification(depth, gt, conf)["rmse_ratio_top50"] <= 0.6


@pytest.mark.parametrize("scale", [0.1, 250.0])
def test_default_depth_range(rng, scale):
    rgb, sp, gt = _scene(rng, 64, 80)
    f = np.float32(scale / 25.0)
    depth, _ = DepthCompleter().complete(rgb, sp * f)
    rel = np.abs(depth - gt * f) / (gt * f)
    assert np.median(rel) < 0.05


@pytest.mark.parametrize("bands", [2, 3])
@pytest.mark.parametrize("shape", [(96, 128), (375, 200), (61, 90)])
def test_bands_give_the_single_thread_result(rng, bands, shape):
    """Row bands on parallel threads (with their overlap) reproduce the one-band result bit for bit."""
    rgb, sp, _ = _scene(rng, *shape)
    one = DepthCompleter(CompleterConfig(bands=1)).complete(rgb, sp)
    many = DepthCompleter(CompleterConfig(bands=bands)).complete(rgb, sp)
    np.testing.assert_array_equal(many[0], one[0])
    np.testing.assert_array_equal(many[1], one[1])


def test_rows_the_sensor_does_not_cover_keep_the_fill(rng):
    """Affinities and propagation run only on the covered rows (the measured ones and a margin); above them the
    depth is the fill, extended from the first covered row.  Reference: the public stages on the whole image; every
    band count gives it bit for bit."""
    from depth_completion_ros.core.affinity import anchored_pair_affinity, colour_sigma
    from depth_completion_ros.core.completer import _COVER_SPACINGS
    from depth_completion_ros.core.confidence import default_confidence, edge_window
    from depth_completion_ros.core.fill import classical_fill_detailed, sparse_stats
    from depth_completion_ros.core.propagation import cspn_propagate_pairs

    rgb, sp, _ = _scene(rng, 260, 96)
    sp[:150] = 0.0  # a LiDAR-like field of view: nothing measured in the upper rows
    cfg = CompleterConfig(bands=1)
    depth, conf = DepthCompleter(cfg).complete(rgb, sp)
    st = sparse_stats(sp)
    halo = cfg.iterations + edge_window(st.spacing) // 2 + 1
    top = int(np.flatnonzero((sp > 0).any(axis=1))[0])
    cov0 = top - halo - int(np.ceil(_COVER_SPACINGS * st.spacing))
    assert 0 < cov0 < top
    fr = classical_fill_detailed(sp, outlier_tolerance=cfg.outlier_tolerance, blur=cfg.fill_blur, extend_above=cov0)
    aff = anchored_pair_affinity(
        rgb[cov0:], anchor=cfg.anchor, sigma=colour_sigma(rgb), sigma_scale=cfg.colour_sigma_scale
    )
    ref = fr.depth.copy()
    ref[cov0:] = cspn_propagate_pairs(
        fr.depth[cov0:], aff.pairs, aff.inv_norm, anchor=cfg.anchor, iterations=cfg.iterations, sparse=fr.anchors[cov0:]
    )
    ref = np.clip(ref, np.float32(1e-3), np.float32(cfg.max_depth))
    np.testing.assert_array_equal(depth, ref)
    np.testing.assert_array_equal(
        conf, default_confidence(ref, fr.depth, fr.anchors > 0, fr.stats.spacing, distance=fr.distance)
    )
    assert not np.array_equal(depth[cov0:], fr.depth[cov0:])  # the covered rows were propagated
    for bands in (2, 3):
        many = DepthCompleter(CompleterConfig(bands=bands)).complete(rgb, sp)
        np.testing.assert_array_equal(many[0], depth)
        np.testing.assert_array_equal(many[1], conf)


def test_bad_bands():
    with pytest.raises(ValueError, match="bands"):
        DepthCompleter(CompleterConfig(bands=0))


def test_balanced_cuts():
    """Cuts split the estimated work (row width + a cost per measurement, the colour scale on band 0) evenly."""
    from depth_completion_ros.core.completer import _COLOUR_SIGMA_COST, _POINT_COST_PX, _balanced_cuts

    assert _balanced_cuts(np.zeros(100, int), 50, 1, min_rows=10) == [0, 100]
    # Uniform rows: band 0 is shorter by the colour scale's share.
    cuts = _balanced_cuts(np.zeros(400, int), 1000, 2, min_rows=10)
    assert cuts[0] == 0 and cuts[-1] == 400
    assert abs(cuts[1] - round(400 * (1 - _COLOUR_SIGMA_COST) / 2)) <= 1
    # Measurements only in the lower half: the lower band gets fewer rows, the estimated costs are about equal.
    points = np.r_[np.zeros(200, int), np.full(200, 2000)]
    cuts = _balanced_cuts(points, 1000, 2, min_rows=10)
    row_cost = 1000 + _POINT_COST_PX * points
    band0 = row_cost[: cuts[1]].sum() + _COLOUR_SIGMA_COST * 400 * 1000
    band1 = row_cost[cuts[1] :].sum()
    assert cuts[1] > 200
    assert abs(band0 - band1) <= row_cost.max()
    # Every band keeps min_rows when the image allows it; strictly increasing cuts.
    cuts = _balanced_cuts(np.r_[np.full(5, 10**6), np.zeros(95, int)], 10, 3, min_rows=20)
    assert cuts[0] == 0 and cuts[-1] == 100
    assert all(b - a >= 20 for a, b in itertools.pairwise(cuts))


def test_error_in_the_colour_scale_reaches_every_band(rng, monkeypatch):
    """A failure on the calling thread is raised there, and the worker bands waiting on it end too."""
    import depth_completion_ros.core.completer as completer_module

    def broken(_rgb):
        raise RuntimeError("colour scale failed")

    monkeypatch.setattr(completer_module, "colour_sigma", broken)
    rgb, sp, _ = _scene(rng, 200, 64)
    completer = DepthCompleter(CompleterConfig(bands=2))
    with pytest.raises(RuntimeError, match="colour scale failed"):
        completer.complete(rgb, sp)
    monkeypatch.undo()
    np.testing.assert_array_equal(
        completer.complete(rgb, sp)[0], DepthCompleter(CompleterConfig(bands=1)).complete(rgb, sp)[0]
    )


def _kitti(d, cam):
    dc = d / "depth_completion"
    rgb_path = dc / "test_image.png" if cam == 2 else d / "raw" / "sync_rect" / "cam_03.png"
    rgb = cv2.cvtColor(cv2.imread(str(rgb_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    sp = cv2.imread(str(dc / f"velodyne_raw_image_0{cam}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 256
    gt = cv2.imread(str(dc / f"groundtruth_image_0{cam}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 256
    return rgb, sp, gt


@pytest.mark.shared_data
@pytest.mark.parametrize("cam", [2, 3])
def test_kitti_beats_baselines_and_confidence(kitti_dc_dir, cam):
    rgb, sp, gt = _kitti(kitti_dc_dir, cam)
    depth, conf = DepthCompleter().complete(rgb, sp)
    ours = compute_metrics(depth, gt)
    ipb = compute_metrics(ip_basic_fill(sp), gt)
    nn = compute_metrics(nearest_fill(sp), gt)
    assert ours.rmse_mm < ipb.rmse_mm
    assert ours.rmse_mm < nn.rmse_mm
    assert ours.mae_mm < ipb.mae_mm
    assert ours.mae_mm < nn.mae_mm
    assert sparsification(depth, gt, conf)["rmse_ratio_top50"] <= 0.6
    one = DepthCompleter(CompleterConfig(bands=1)).complete(rgb, sp)
    np.testing.assert_array_equal(one[0], depth)  # the default's parallel bands change nothing
    np.testing.assert_array_equal(one[1], conf)


def _tum(d):
    rgb = cv2.cvtColor(cv2.imread(str(d / "TUM_color.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    gt = cv2.imread(str(d / "TUM_depth.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 5000
    return rgb, gt


@pytest.mark.shared_data
@pytest.mark.parametrize("case", ["spot_grid", "holes", "random1", "random5"])
def test_tum_beats_baselines(tum_dir, case):
    """ToF / structured-light-like inputs from the TUM frame (ground truth = the full depth)."""
    rgb, gt = _tum(tum_dir)
    r = np.random.default_rng(0)
    sp = np.zeros_like(gt)
    if case == "spot_grid":
        sp[4::12, 4::12] = gt[4::12, 4::12]
    elif case == "holes":
        blobs = cv2.GaussianBlur(r.random(gt.shape).astype(np.float32), (0, 0), 6)
        sp = np.where(blobs < np.percentile(blobs, 70), gt, 0).astype(np.float32)
    else:
        sp = np.where(r.random(gt.shape) < (0.01 if case == "random1" else 0.05), gt, 0).astype(np.float32)
    ours = compute_metrics(DepthCompleter().complete(rgb, sp)[0], gt)
    ipb = compute_metrics(ip_basic_fill(sp), gt)
    nn = compute_metrics(nearest_fill(sp), gt)
    assert ours.rmse_mm < min(ipb.rmse_mm, nn.rmse_mm)
    if case in ("spot_grid", "holes"):  # known gap: on random points nearest fill keeps a lower MAE
        assert ours.mae_mm < min(ipb.mae_mm, nn.mae_mm)


def test_cuda_out_of_memory_falls_back_to_cpu(monkeypatch, rng):
    """A CUDA OOM during inference: one warning, the model moves to the CPU, the frame is still completed."""
    from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter

    completer = DepthCompleter(CompleterConfig(method="cspn", allow_random_weights=True, device="cpu"))
    completer._device = torch.device("cuda")  # pretend the model was placed on a GPU
    calls = []
    real = completer._complete_cspn

    def flaky(rgb, sparse):
        calls.append(completer._device.type)
        if completer._device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(rgb, sparse)

    monkeypatch.setattr(completer, "_complete_cspn", flaky)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    rgb, sp, _ = _scene(rng, 32, 48)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        depth, _ = completer.complete(rgb, sp)
    assert calls == ["cuda", "cpu"]
    assert completer.device.type == "cpu"
    assert depth.shape == sp.shape and np.isfinite(depth).all()
    completer.complete(rgb, sp)  # stays on the CPU, no second warning needed
    assert calls[-1] == "cpu"
