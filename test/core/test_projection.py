"""Point projection with a z-buffer, LiDAR de-skew and depth registration (synthetic and real KITTI)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_completion_ros.core.calibration import read_kitti_oxts_motion, read_kitti_raw_calibration
from depth_completion_ros.core.camera import CameraModel
from depth_completion_ros.core.errors import CalibrationError, ShapeError
from depth_completion_ros.core.projection import deskew_points, project_points, register_depth
from depth_completion_ros.core.units import kitti_png_to_metres

K = np.array([[200.0, 0.0, 79.5], [0.0, 200.0, 59.5], [0.0, 0.0, 1.0]])
CAM = CameraModel(width=160, height=120, K=K)
# LiDAR frame (x forward, y left, z up) -> camera optical frame (x right, y down, z forward).
T_CAM_FROM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0, 0, 0, 1.0]])


def _loop_reference(points: np.ndarray, T: np.ndarray, cam: CameraModel, min_depth: float) -> np.ndarray:
    """Per-point Python reference: transform, pinhole, round, keep the nearest."""
    w, h = cam.image_size
    out = np.zeros((h, w), np.float32)
    for p in points:
        if not np.isfinite(p[:3]).all():
            continue
        x, y, z = T[:3, :3] @ p[:3] + T[:3, 3]
        if z <= min_depth:
            continue
        u = int(np.floor(cam.K[0, 0] * x / z + cam.K[0, 2] + 0.5))
        v = int(np.floor(cam.K[1, 1] * y / z + cam.K[1, 2] + 0.5))
        if 0 <= u < w and 0 <= v < h and (out[v, u] == 0 or z < out[v, u]):
            out[v, u] = z
    return out


def test_plane_at_known_distance_gives_exact_depth() -> None:
    ys, zs = np.meshgrid(np.linspace(-3, 3, 200), np.linspace(-2.5, 2.5, 150))
    plane = np.column_stack([np.full(ys.size, 7.5), ys.ravel(), zs.ravel()])  # x = 7.5 m ahead
    depth = project_points(plane, T_CAM_FROM_LIDAR, CAM)
    assert depth.shape == (120, 160)
    assert depth.dtype == np.float32
    assert (depth > 0).mean() > 0.95
    assert np.allclose(depth[depth > 0], 7.5)


def test_points_behind_and_outside_are_dropped() -> None:
    pts = np.array([[-5.0, 0.0, 0.0], [0.05, 0.0, 0.0], [5.0, 40.0, 0.0], [5.0, 0.0, 0.0]])
    depth = project_points(pts, T_CAM_FROM_LIDAR, CAM, min_depth=0.1)
    assert np.count_nonzero(depth) == 1
    assert depth[60, 80] == pytest.approx(5.0) or depth[59, 79] == pytest.approx(5.0)


def test_zbuffer_keeps_the_nearest_in_any_order() -> None:
    pts = np.array([[9.0, 0.0, 0.0], [4.0, 0.0, 0.0], [6.0, 0.0, 0.0]])
    for order in ([0, 1, 2], [1, 2, 0], [2, 0, 1]):
        depth = project_points(pts[order], T_CAM_FROM_LIDAR, CAM)
        assert np.count_nonzero(depth) == 1
        assert depth.max() == pytest.approx(4.0)


def test_matches_per_point_loop_on_random_cloud(rng: np.random.Generator) -> None:
    pts = rng.uniform([-5, -20, -3], [40, 20, 3], size=(4000, 3))
    pts[::97] = np.nan
    expected = _loop_reference(pts, T_CAM_FROM_LIDAR, CAM, 0.1)
    assert np.count_nonzero(expected) > 100
    np.testing.assert_allclose(project_points(pts, T_CAM_FROM_LIDAR, CAM), expected, rtol=1e-5)


def test_chunked_zbuffer_and_non_finite_points(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny chunks: the nearest point of a pixel may come in any chunk; inf/NaN points never land."""
    import depth_completion_ros.core.projection as projection

    monkeypatch.setattr(projection, "_CHUNK", 7)
    pts = rng.uniform([-5, -20, -3], [40, 20, 3], size=(600, 3))
    pts = np.concatenate([pts, pts[:50] * [2.0, 2.0, 2.0], pts[:50] * [0.5, 0.5, 0.5]])  # same rays, other depths
    pts[::31, 0] = np.inf
    pts[5::37] = [np.inf, np.inf, np.inf]
    pts[7::41, 2] = -np.inf
    pts[9::43, 1] = np.nan
    expected = _loop_reference(pts, T_CAM_FROM_LIDAR, CAM, 0.1)
    assert np.count_nonzero(expected) > 100
    np.testing.assert_allclose(project_points(pts, T_CAM_FROM_LIDAR, CAM), expected, rtol=1e-5)


def test_max_depth_and_extra_columns() -> None:
    pts = np.array([[5.0, 0.0, 0.0, 0.7], [50.0, 0.1, 0.0, 0.3]])
    depth = project_points(pts, T_CAM_FROM_LIDAR, CAM, max_depth=20.0)
    assert np.count_nonzero(depth) == 1


def test_distorted_camera_projection_agrees_with_camera_model(rng: np.random.Generator) -> None:
    cam = CameraModel(width=160, height=120, K=K, D=np.array([-0.3, 0.1, 0.001, 0.0, 0.0]))
    pts_cam = np.column_stack([rng.uniform(-3, 3, 300), rng.uniform(-2, 2, 300), rng.uniform(4, 9, 300)])
    depth = project_points(pts_cam, np.eye(4), cam)
    uv, z = cam.project(pts_cam)
    u, v = np.floor(uv + 0.5).astype(int).T
    inside = (u >= 0) & (u < 160) & (v >= 0) & (v < 120)
    assert inside.sum() > 50
    for ui, vi, zi in zip(u[inside], v[inside], z[inside], strict=True):
        assert depth[vi, ui] <= zi + 1e-5


@pytest.mark.parametrize(
    ("T", "match"),
    [
        (np.eye(3), "4x4"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.diag([2.0, 1.0, 1.0, 1.0]), "not rigid"),
        (np.diag([1.0, 1.0, -1.0, 1.0]), "not rigid"),
        (np.vstack([np.eye(4)[:3], [0, 0, 1, 1]]), "last row"),
    ],
)
def test_bad_extrinsics_are_clear_errors(T: np.ndarray, match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        project_points(np.zeros((3, 3)), T, CAM)


def test_bad_points_shape() -> None:
    with pytest.raises(ShapeError, match="points"):
        project_points(np.zeros((5, 2)), np.eye(4), CAM)


def test_deskew_by_hand() -> None:
    # Point to the left (azimuth +90 deg) is captured a quarter scan before the reference (clockwise spin).
    pts = np.array([[0.0, 10.0, 0.0], [10.0, 0.0, 0.0]])
    out = deskew_points(pts, np.array([10.0, 0.0, 0.0]), scan_period=0.1)
    assert np.allclose(out[0], [10.0 * -0.025, 10.0, 0.0])
    assert np.allclose(out[1], pts[1])
    timed = deskew_points(pts, np.zeros(3), np.array([0.0, 0.0, 1.0]), times=np.array([0.0, 0.1]))
    assert np.allclose(timed[1], [10.0, 1.0, 0.0])  # w x p = (0, 10, 0) times 0.1 s


def test_register_depth_matches_analytic_answer() -> None:
    """A fronto-parallel wall at 4 m seen by a depth camera 0.1 m to the right of the RGB camera."""
    depth_cam = CameraModel(width=80, height=60, K=np.array([[100.0, 0, 39.5], [0, 100.0, 29.5], [0, 0, 1]]))
    src = np.full((60, 80), 4.0, np.float32)
    T_rgb_from_depth = np.eye(4)
    T_rgb_from_depth[0, 3] = 0.1  # depth camera origin at x = +0.1 m in the RGB frame
    out = register_depth(src, depth_cam, CAM, T_rgb_from_depth)
    assert np.allclose(out[out > 0], 4.0)
    # Depth pixel u_d sees x = (u_d - 39.5) / 100 * 4 + 0.1 m, which lands at u = 200 x / 4 + 79.5 = 2 u_d + 5.5
    # in the RGB image, rounded to 2 u_d + 6: every other column from 6 on, up to the image border.
    cols = np.nonzero((out > 0).any(axis=0))[0]
    assert cols.tolist() == [2 * ud + 6 for ud in range(80) if 2 * ud + 6 < 160]
    rows = np.nonzero((out > 0).any(axis=1))[0]
    assert rows.tolist() == [2 * vd + 1 for vd in range(60)]  # v = 2 (v_d - 29.5) + 59.5 -> 2 v_d + 1
    # A tilted wall: depth varies with column, registration keeps z consistent with geometry.
    slope = np.linspace(3.0, 5.0, 80, dtype=np.float32)[None].repeat(60, 0)
    out2 = register_depth(slope, depth_cam, CAM, np.eye(4))
    v, u = np.nonzero(out2)
    pts = CAM.unproject(np.column_stack([u, v]).astype(float), out2[v, u].astype(float))
    uv_src, _ = depth_cam.project(pts)
    expected = np.interp(uv_src[:, 0], np.arange(80), slope[0])
    assert np.abs(out2[v, u] - expected).max() < 0.06


def test_register_depth_size_check() -> None:
    with pytest.raises(ShapeError, match="camera is 160x120"):
        register_depth(np.zeros((10, 10), np.float32), CAM, CAM, np.eye(4))


def _within_one_pixel(depth: np.ndarray, ref: np.ndarray, tol_m: float) -> float:
    """Fraction of ref's pixels with a projected depth in their 3x3 neighbourhood within tol_m."""
    h, w = ref.shape
    ok = np.zeros(ref.shape, bool)
    pad = np.pad(depth, 1)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            sh = pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            ok |= (sh > 0) & (np.abs(sh - ref) < tol_m)
    mask = ref > 0
    return float((ok & mask).sum() / mask.sum())


def test_kitti_projection_reproduces_velodyne_raw(kitti_dc_dir: Path) -> None:
    raw = kitti_dc_dir / "raw"
    calib = read_kitti_raw_calibration(raw / "calib_cam_to_cam.txt", raw / "calib_velo_to_cam.txt", 2)
    scan = np.fromfile(raw / "lidar_data.bin", dtype=np.float32).reshape(-1, 4)
    ref = kitti_png_to_metres(cv2.imread(str(kitti_dc_dir / "depth_completion/velodyne_raw_image_02.png"), -1))
    v, w = read_kitti_oxts_motion(raw / "imu_data.txt", raw / "calib_imu_to_velo.txt")
    deskewed = deskew_points(scan, v, w)
    depth = project_points(deskewed, calib.T_camera_from_velo, calib.camera)
    assert depth.shape == ref.shape
    assert abs(np.count_nonzero(depth) - np.count_nonzero(ref)) < 0.01 * np.count_nonzero(ref)
    assert _within_one_pixel(depth, ref, 0.2) >= 0.95
    # Without motion compensation the PNG is matched much worse: KITTI's velodyne_raw is de-skewed.
    plain = project_points(scan, calib.T_camera_from_velo, calib.camera)
    assert _within_one_pixel(plain, ref, 0.2) < _within_one_pixel(depth, ref, 0.2) - 0.05


def test_finite_points():
    from depth_completion_ros.core.projection import finite_points

    pts = np.arange(15, dtype=np.float32).reshape(5, 3)
    assert finite_points(pts) is pts  # all finite: no copy
    bad = pts.copy()
    bad[1, 0], bad[3, 2], bad[4, 1] = np.nan, np.inf, -np.inf
    np.testing.assert_array_equal(finite_points(bad), pts[[0, 2]])
    four = np.c_[pts, np.full(5, np.nan)]  # a non-finite extra column drops the row too
    assert finite_points(four).shape == (0, 4)
    with pytest.raises(ShapeError):
        finite_points(pts.ravel())
