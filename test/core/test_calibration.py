"""KITTI calibration readers (raw and object formats) and OXTS motion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from depth_completion_ros.core.calibration import (
    read_kitti_object_calibration,
    read_kitti_oxts_motion,
    read_kitti_raw_calibration,
)
from depth_completion_ros.core.errors import CalibrationError
from depth_completion_ros.core.projection import project_points

P2 = [700.0, 0.0, 600.0, 42.0, 0.0, 700.0, 180.0, 0.7, 0.0, 0.0, 1.0, 0.003]
R_RECT = [0.9999, 0.0099, -0.0074, -0.0099, 0.9999, -0.0043, 0.0074, 0.0044, 0.9999]
VELO_R = [0.0, -1.0, 0.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0]
VELO_T = [0.01, -0.08, -0.27]


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.6e}" for v in values)


def _write_raw(tmp_path: Path) -> tuple[Path, Path]:
    cam = tmp_path / "calib_cam_to_cam.txt"
    cam.write_text(
        "calib_time: 09-Jan-2012 13:57:47\n"
        f"S_rect_02: 1.242000e+03 3.750000e+02\nR_rect_00: {_fmt(R_RECT)}\nP_rect_02: {_fmt(P2)}\n"
    )
    velo = tmp_path / "calib_velo_to_cam.txt"
    velo.write_text(f"calib_time: 15-Mar-2012 11:37:16\nR: {_fmt(VELO_R)}\nT: {_fmt(VELO_T)}\n")
    return cam, velo


def _devkit_projection(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KITTI devkit: x = P_rect_02 @ R_rect_00 @ [R|T] @ X; depth = x[2]."""
    R = np.eye(4)
    R[:3, :3] = np.reshape(R_RECT, (3, 3))
    Tr = np.eye(4)
    Tr[:3, :3] = np.reshape(VELO_R, (3, 3))
    Tr[:3, 3] = VELO_T
    x = (np.reshape(P2, (3, 4)) @ R @ Tr @ np.c_[points, np.ones(len(points))].T).T
    return x[:, :2] / x[:, 2:], x[:, 2]


def test_raw_calibration_equals_devkit_projection(tmp_path: Path, rng: np.random.Generator) -> None:
    calib = read_kitti_raw_calibration(*_write_raw(tmp_path), camera_index=2)
    assert calib.camera.image_size == (1242, 375)
    assert calib.camera.rectified
    pts = np.column_stack([rng.uniform(5, 60, 100), rng.uniform(-10, 10, 100), rng.uniform(-2, 1, 100)])
    cam_pts = pts @ calib.T_camera_from_velo[:3, :3].T + calib.T_camera_from_velo[:3, 3]
    uv, z = calib.camera.project(cam_pts)
    uv_ref, z_ref = _devkit_projection(pts)
    assert np.allclose(uv, uv_ref, atol=1e-6)
    assert np.allclose(z, z_ref, atol=1e-9)
    assert np.allclose(calib.camera.P[:, 3], 0.0)  # baseline folded into the extrinsic


def test_raw_calibration_missing_key_and_file(tmp_path: Path) -> None:
    cam, velo = _write_raw(tmp_path)
    with pytest.raises(CalibrationError, match="P_rect_03"):
        read_kitti_raw_calibration(cam, velo, camera_index=3)
    with pytest.raises(CalibrationError, match="not found"):
        read_kitti_raw_calibration(tmp_path / "nope.txt", velo)
    velo.write_text("R: 1 0 0\n")
    with pytest.raises(CalibrationError, match="R must have 9"):
        read_kitti_raw_calibration(cam, velo)


def test_object_calibration(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "000001.txt"
    Tr = np.reshape(VELO_R, (3, 3))
    path.write_text(
        f"P0: {_fmt(P2)}\nP1: {_fmt(P2)}\nP2: {_fmt(P2)}\nP3: {_fmt(P2)}\nR0_rect: {_fmt(R_RECT)}\n"
        f"Tr_velo_to_cam: {_fmt(np.c_[Tr, VELO_T].ravel().tolist())}\n"
    )
    calib = read_kitti_object_calibration(path, image_size=(1242, 375))
    pts = np.column_stack([rng.uniform(5, 60, 50), rng.uniform(-10, 10, 50), rng.uniform(-2, 1, 50)])
    uv, _ = calib.camera.project(pts @ calib.T_camera_from_velo[:3, :3].T + calib.T_camera_from_velo[:3, 3])
    assert np.allclose(uv, _devkit_projection(pts)[0], atol=1e-6)


def test_real_object_frame_drops_points_behind_and_outside(kitti_object_dir: Path) -> None:
    data = kitti_object_dir / "data"
    calib = read_kitti_object_calibration(data / "calib" / "000001.txt")
    scan = np.fromfile(data / "velodyne" / "0000000001.bin", np.float32).reshape(-1, 4)
    assert (scan[:, 0] < 0).mean() > 0.2  # a full 360-degree scan: many points behind the camera
    depth = project_points(scan, calib.T_camera_from_velo, calib.camera)
    assert depth.shape == (375, 1242) or depth.shape[::-1] == calib.camera.image_size
    n = np.count_nonzero(depth)
    assert 5000 < n < 0.5 * len(scan)
    assert depth[depth > 0].min() > 0.1


def test_oxts_motion(tmp_path: Path) -> None:
    rec = np.zeros(30)
    rec[8:11] = [10.0, 0.5, 0.1]
    rec[20:23] = [0.0, 0.0, 0.2]
    path = tmp_path / "oxts.txt"
    path.write_text(" ".join(map(str, rec)))
    v, w = read_kitti_oxts_motion(path)
    assert v.tolist() == [10.0, 0.5, 0.1]
    assert w.tolist() == [0.0, 0.0, 0.2]
    imu = tmp_path / "calib_imu_to_velo.txt"
    imu.write_text("R: 1 0 0 0 1 0 0 0 1\nT: -1.0 0.0 0.0\n")
    v2, w2 = read_kitti_oxts_motion(path, imu)
    # The Velodyne sits 1 m ahead of the IMU: yawing at 0.2 rad/s adds 0.2 m/s to the left.
    assert np.allclose(v2, [10.0, 0.7, 0.1])
    assert np.allclose(w2, w)
    path.write_text("1 2 3")
    with pytest.raises(CalibrationError, match="OXTS"):
        read_kitti_oxts_motion(path)
