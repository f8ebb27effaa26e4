"""Augmentation: crop and flip keep pixels and intrinsics consistent (unprojection), jitter touches only RGB."""

from __future__ import annotations

import numpy as np
import pytest

from depth_completion_ros.core.errors import DataError
from depth_completion_ros.data.augment import AugmentConfig, Frame, augment, bottom_crop, crop, hflip, to_sample


def _frame(rng) -> Frame:
    h, w = 40, 60
    gt = rng.uniform(1, 50, (h, w)).astype(np.float32)
    sparse = np.where(rng.uniform(size=(h, w)) < 0.1, gt, 0).astype(np.float32)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    K = np.array([[50.0, 0, 27.3], [0, 51.0, 18.9], [0, 0, 1]])
    return Frame(rgb=rgb, sparse=sparse, gt=gt, K=K, id="t")


def _unproject(K, u, v, z):
    return np.array([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])


def test_crop_keeps_3d_points(rng):
    f = _frame(rng)
    c = crop(f, 5, 7, 20, 30)
    assert c.rgb.shape == (20, 30, 3)
    for v, u in [(0, 0), (19, 29), (10, 3)]:
        np.testing.assert_allclose(_unproject(c.K, u, v, c.gt[v, u]), _unproject(f.K, u + 7, v + 5, f.gt[v + 5, u + 7]))
    with pytest.raises(DataError, match="outside"):
        crop(f, 30, 0, 20, 10)


def test_hflip_mirrors_x(rng):
    f = _frame(rng)
    g = hflip(f)
    w = f.rgb.shape[1]
    for v, u in [(0, 0), (12, 44), (39, 59)]:
        p = _unproject(f.K, u, v, f.gt[v, u])
        q = _unproject(g.K, w - 1 - u, v, g.gt[v, w - 1 - u])
        np.testing.assert_allclose(q, [-p[0], p[1], p[2]], atol=1e-9)
    np.testing.assert_array_equal(hflip(g).rgb, f.rgb)


def test_bottom_crop_matches_kitti_selection(rng):
    f = Frame(
        rgb=np.zeros((375, 1242, 3), np.uint8),
        sparse=np.zeros((375, 1242), np.float32),
        gt=np.zeros((375, 1242), np.float32),
        K=np.array([[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]]),
        id="k",
    )
    c = bottom_crop(f, 352, 1216)
    # val_selection_cropped intrinsics: principal point shifted by (-13, -23)
    np.testing.assert_allclose(c.K[:2, 2], [596.5593, 149.854])


def test_jitter_changes_only_rgb_and_is_seeded(rng):
    f = _frame(rng)
    cfg = AugmentConfig(crop=(16, 24), hflip=0.5, brightness=0.3, contrast=0.3, saturation=0.3)
    a = augment(f, cfg, np.random.default_rng(3))
    b = augment(f, cfg, np.random.default_rng(3))
    np.testing.assert_array_equal(a.rgb, b.rgb)
    assert a.rgb.shape == (16, 24, 3)
    # depth values are a subset of the original (moved, never changed)
    assert np.isin(a.gt, f.gt).all()
    nojit = augment(
        f, AugmentConfig(crop=(16, 24), hflip=0.5, brightness=0, contrast=0, saturation=0), np.random.default_rng(3)
    )
    np.testing.assert_array_equal(nojit.gt, a.gt)
    assert not np.array_equal(nojit.rgb, a.rgb)


def test_to_sample(rng):
    s = to_sample(_frame(rng))
    assert s["rgb"].shape == (3, 40, 60) and s["rgb"].dtype.is_floating_point
    assert float(s["rgb"].max()) <= 1.0
    assert s["sparse"].shape == (1, 40, 60) and s["K"].shape == (3, 3)
