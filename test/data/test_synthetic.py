"""Synthetic scenes: determinism, exact ray-cast depth, LiDAR / ToF sampling, RGB edges at depth edges."""

from __future__ import annotations

import numpy as np
import pytest

from depth_completion_ros.core.errors import DataError
from depth_completion_ros.data.synthetic import SyntheticDataset, generate_scene


@pytest.fixture(scope="module")
def outdoor():
    return generate_scene(seed=7, kind="outdoor", width=620, height=188, lidar_beams=64)


def _ref_project(points: np.ndarray, T: np.ndarray, K: np.ndarray, w: int, h: int) -> np.ndarray:
    """Reference z-buffer projection (nearest pixel, keep the closest), written independently here."""
    pc = points[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    out = np.zeros((h, w))
    for x, y, z in pc:
        if z <= 0.1:
            continue
        u = round(K[0, 0] * x / z + K[0, 2])
        v = round(K[1, 1] * y / z + K[1, 2])
        if 0 <= u < w and 0 <= v < h and (out[v, u] == 0 or z < out[v, u]):
            out[v, u] = z
    return out


def test_shapes_dtypes_and_determinism(outdoor):
    s = outdoor
    assert s.rgb.shape == (188, 620, 3) and s.rgb.dtype == np.uint8
    assert s.depth_gt.shape == (188, 620) and s.depth_gt.dtype == np.float32
    assert s.sparse_depth.shape == (188, 620) and s.sparse_depth.dtype == np.float32
    assert s.points_lidar.ndim == 2 and s.points_lidar.shape[1] == 4 and s.points_lidar.dtype == np.float32
    assert s.T_camera_from_lidar.shape == (4, 4) and s.T_camera_from_lidar.dtype == np.float64
    assert s.kind == "outdoor"
    again = generate_scene(seed=7, kind="outdoor", width=620, height=188)
    np.testing.assert_array_equal(again.rgb, s.rgb)
    np.testing.assert_array_equal(again.depth_gt, s.depth_gt)
    np.testing.assert_array_equal(again.points_lidar, s.points_lidar)
    other = generate_scene(seed=8, kind="outdoor", width=620, height=188)
    assert not np.array_equal(other.depth_gt, s.depth_gt)
    # sky on top, ground at the bottom
    assert (s.depth_gt[0] == 0).mean() > 0.2
    assert (s.depth_gt[-1] > 0).all()


def test_ground_pixels_have_exact_plane_depth(outdoor):
    """Bottom rows: most pixels see the ground plane z = -1.73 m (LiDAR frame); their depth must be exact."""
    s = outdoor
    K = s.K
    T = s.T_camera_from_lidar
    R, t = T[:3, :3], T[:3, 3]
    cam_in_lidar = -R.T @ t
    h, w = s.depth_gt.shape
    vs, us = np.mgrid[h - 20 : h, 0:w]
    rays = np.stack([(us - K[0, 2]) / K[0, 0], (vs - K[1, 2]) / K[1, 1], np.ones_like(us, float)], -1)
    dz = (rays @ R)[..., 2]  # z component of the ray in the LiDAR frame, per unit camera depth
    expected = (-1.73 - cam_in_lidar[2]) / dz
    got = s.depth_gt[h - 20 :].astype(np.float64)
    match = np.abs(got - expected) < 1e-3 * expected
    assert match.mean() > 0.5  # ground is the majority of the bottom band
    # non-matching pixels are occluders, hence strictly closer than the ground
    assert (got[~match] < expected[~match]).all()


def test_lidar_points_and_projection(outdoor):
    s = outdoor
    p = s.points_lidar
    rng_m = np.linalg.norm(p[:, :3], axis=1)
    elev = np.degrees(np.arcsin(p[:, 2] / rng_m))
    assert elev.min() > -25.2 and elev.max() < 2.3
    assert p[:, 3].min() >= 0.0 and p[:, 3].max() <= 1.0
    # points cover 360 degrees of azimuth
    az = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
    assert np.histogram(az, bins=36, range=(-180, 180))[0].min() > 0
    # sparse = projection of the points (independent reference projection)
    ref = _ref_project(p, s.T_camera_from_lidar, s.K, 620, 188)
    both = (ref > 0) & (s.sparse_depth > 0)
    assert both.sum() > 0.9 * (ref > 0).sum()
    assert np.median(np.abs(ref[both] - s.sparse_depth[both])) < 1e-3
    # and the LiDAR samples agree with the exact depth (range noise 1.5 cm, some edge see-through)
    ok = both & (s.depth_gt > 0)
    err = np.abs(s.sparse_depth[ok] - s.depth_gt[ok])
    assert np.median(err) < 0.03
    assert np.mean(err < 0.5) > 0.95


@pytest.mark.parametrize("beams", [16, 32, 64])
def test_beam_count(beams):
    s = generate_scene(seed=1, kind="outdoor", width=320, height=96, lidar_beams=beams)
    p = s.points_lidar
    elev = np.degrees(np.arcsin(p[:, 2] / np.linalg.norm(p[:, :3], axis=1)))
    spacing = 26.9 / (beams - 1)
    rows = np.rint((elev + 24.9) / spacing)
    assert np.abs((elev + 24.9) / spacing - rows).max() < 0.25  # clustered on the beam angles
    assert len(np.unique(rows)) <= beams
    assert len(np.unique(rows)) >= beams - 3  # the highest beams may see only sky ahead and behind


def test_tof_spot_grid():
    s = generate_scene(seed=3, kind="indoor", width=320, height=240, sensor="tof")
    vs, us = np.nonzero(s.sparse_depth)
    spacing = 4  # max(4, round(320 / 80))
    assert len(vs) > 0.6 * (240 // spacing) * (320 // spacing)
    # on the regular grid within jitter
    off_u = (us - spacing // 2) - spacing * np.rint((us - spacing // 2) / spacing)
    off_v = (vs - spacing // 2) - spacing * np.rint((vs - spacing // 2) / spacing)
    assert np.mean((np.abs(off_u) <= 1) & (np.abs(off_v) <= 1)) > 0.95  # jitter 0.5 px std
    assert 0.35 < np.mean((off_u == 0) & (off_v == 0)) < 0.6  # P(|N(0, 0.5)| < 0.5)^2 = 0.47
    rel = np.abs(s.sparse_depth[vs, us] / s.depth_gt[vs, us] - 1.0)
    assert np.median(rel) < 0.02  # 1 % relative noise, spots move < 1 px
    # points_lidar reproduce the sparse depth when projected
    ref = _ref_project(s.points_lidar, s.T_camera_from_lidar, s.K, 320, 240)
    np.testing.assert_allclose(ref[vs, us], s.sparse_depth[vs, us], rtol=1e-4)


def test_rgb_edges_agree_with_depth_edges(outdoor):
    s = outdoor
    d = s.depth_gt.astype(np.float64)
    g = s.rgb.astype(np.float64).mean(axis=2)
    dj = np.abs(np.diff(d, axis=1))
    rel_jump = dj / np.maximum(np.minimum(d[:, 1:], d[:, :-1]), 1e-3)
    depth_edge = (rel_jump > 0.3) & (d[:, 1:] > 0) & (d[:, :-1] > 0)
    grad = np.abs(np.diff(g, axis=1))
    assert depth_edge.sum() > 50
    assert grad[depth_edge].mean() > 3.0 * grad[~depth_edge].mean()


def test_indoor_is_closed_room():
    s = generate_scene(seed=2, kind="indoor", width=160, height=120)
    assert (s.depth_gt > 0).all()
    assert s.depth_gt.max() < 20.0


def test_bad_arguments():
    with pytest.raises(DataError, match="kind"):
        generate_scene(kind="underwater")
    with pytest.raises(DataError, match="sensor"):
        generate_scene(sensor="radar")


def test_dataset_samples():
    ds = SyntheticDataset(2, seed=5, width=160, height=64)
    s = ds[1]
    assert s["rgb"].shape == (3, 64, 160) and float(s["rgb"].max()) <= 1.0
    assert s["sparse"].shape == (1, 64, 160) and s["gt"].shape == (1, 64, 160)
    assert s["id"] == "synthetic/outdoor/6"
    ref = generate_scene(seed=6, width=160, height=64)
    np.testing.assert_array_equal(s["gt"][0].numpy(), ref.depth_gt)
    with pytest.raises(IndexError):
        ds[2]
