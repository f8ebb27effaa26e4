"""RGB-D reader and sparse sampling modes (random, ToF grid, structured-light holes)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_completion_ros.core.errors import DataError
from depth_completion_ros.core.units import TUM_PNG_SCALE
from depth_completion_ros.data.rgbd import RGBDDataset, SparseSamplingConfig, sample_sparse

SHARED_TUM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tum_rgbd_frame"


def _source():
    """(rgb uint8 RGB (480, 640, 3), depth uint16 TUM units)."""
    if SHARED_TUM.is_dir():
        rgb = cv2.cvtColor(cv2.imread(str(SHARED_TUM / "TUM_color.png")), cv2.COLOR_BGR2RGB)
        return rgb, cv2.imread(str(SHARED_TUM / "TUM_depth.png"), -1)
    from depth_completion_ros.data.synthetic import generate_scene

    s = generate_scene(seed=0, kind="indoor", width=640, height=480)
    return s.rgb, np.rint(s.depth_gt * TUM_PNG_SCALE).astype(np.uint16)


def _tree(root: Path) -> None:
    rgb, depth = _source()
    (root / "scene_a/rgb").mkdir(parents=True)
    (root / "scene_a/depth").mkdir(parents=True)
    cv2.imwrite(str(root / "scene_a/rgb/0001.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "scene_a/depth/0001.png"), depth)
    cv2.imwrite(str(root / "scene_a/rgb/0002.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # no depth: skipped
    (root / "scene_b").mkdir()
    cv2.imwrite(str(root / "scene_b/f7_rgb.png"), cv2.cvtColor(rgb[::2, ::2], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "scene_b/f7_depth.png"), depth[::2, ::2])


def test_layouts_scale_and_random_sampling(tmp_path):
    _tree(tmp_path)
    ds = RGBDDataset(tmp_path, sampling=SparseSamplingConfig(mode="random", num_points=300), depth_scale=TUM_PNG_SCALE)
    assert len(ds) == 2 and ds.skipped == 1
    ids = [p[0] for p in ds.pairs]
    assert ids == ["scene_a/rgb/0001", "scene_b/f7"]
    _, depth = _source()
    s = ds[0]
    np.testing.assert_allclose(s["gt"][0].numpy(), depth / 5000.0, rtol=1e-6)
    sp = s["sparse"][0].numpy()
    assert (sp > 0).sum() == 300
    np.testing.assert_array_equal(sp[sp > 0], s["gt"][0].numpy()[sp > 0])
    assert ds[1]["rgb"].shape == (3, 240, 320)
    # training draws change per epoch, validation ones do not
    ds.set_epoch(1)
    assert not np.array_equal(ds[0]["sparse"].numpy(), s["sparse"].numpy())
    val = RGBDDataset(tmp_path, depth_scale=TUM_PNG_SCALE, deterministic=True)
    a = val[0]["sparse"].numpy()
    val.set_epoch(3)
    np.testing.assert_array_equal(val[0]["sparse"].numpy(), a)


def test_tof_mode_grid(rng):
    depth = np.full((60, 80), 3.0, np.float32)
    sp = sample_sparse(depth, np.zeros((60, 80, 3), np.uint8), SparseSamplingConfig(mode="tof", spacing=10), rng)
    vs, us = np.nonzero(sp)
    assert 0.8 * 48 <= len(vs) <= 48
    assert np.all(np.abs(((us - 5) % 10 + 5) % 10 - 5) <= 2)
    assert np.abs(sp[vs, us] / 3.0 - 1).max() < 0.05


def test_structured_light_holes(rng):
    h, w = 120, 160
    depth = np.full((h, w), 2.0, np.float32)
    depth[:, 80:] = 4.0  # a depth edge at column 80
    rgb = np.full((h, w, 3), 128, np.uint8)
    rgb[10:30, 10:40] = 5  # dark patch
    rgb[60:80, 100:130] = 255  # specular patch
    cfg = SparseSamplingConfig(mode="structured_light", blob_fraction=0.0, rel_noise=0.0)
    sp = sample_sparse(depth, rgb, cfg, rng)
    assert (sp[10:30, 10:40] == 0).all()
    assert (sp[60:80, 100:130] == 0).all()
    assert (sp[:, 78:82] == 0).all()  # edge band
    other = np.ones((h, w), bool)
    other[10:30, 10:40] = other[60:80, 100:130] = False
    other[:, 76:84] = False
    assert (sp[other] == depth[other]).all()
    blobs = sample_sparse(depth, rgb, SparseSamplingConfig(mode="structured_light", blob_fraction=0.1), rng)
    lost = (blobs[other] == 0).mean()
    assert 0.02 < lost < 0.3
    far = sample_sparse(np.full((h, w), 9.0, np.float32), rgb, cfg, rng)
    assert not far.any()  # beyond max_range 8 m


def test_bad_data(tmp_path):
    _tree(tmp_path)
    ds = RGBDDataset(tmp_path, depth_scale=TUM_PNG_SCALE)
    cv2.imwrite(str(tmp_path / "scene_b/f7_depth.png"), np.zeros((240, 320), np.uint16))
    with pytest.raises(DataError, match="ground truth is empty"):
        ds[1]
    cv2.imwrite(str(tmp_path / "scene_b/f7_depth.png"), np.ones((200, 320), np.uint16))
    with pytest.raises(DataError, match="does not match the RGB size"):
        ds[1]
    (tmp_path / "scene_b/f7_depth.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="corrupt or unreadable depth"):
        ds[1]
    with pytest.raises(DataError, match="sampling mode"):
        SparseSamplingConfig(mode="lidar")
    with pytest.raises(DataError, match="no RGB-D frames"):
        RGBDDataset(tmp_path / "scene_a" / "depth")
