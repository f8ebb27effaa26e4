"""Extrinsics: quaternion maths, the tf-like TransformBuffer, and the parameter / KITTI / tf sources."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from depth_completion_ros.core.errors import CalibrationError
from depth_completion_ros.ros.extrinsics import (
    ExtrinsicsProvider,
    TransformBuffer,
    matrix_from_xyz_quat,
    quat_xyzw_from_matrix,
)
from depth_completion_ros.ros.params import ExtrinsicsConfig

S = 1_000_000_000


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def rigid(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def test_quaternion_known_values():
    # 90° about z: q = (0, 0, sin45, cos45)
    T = matrix_from_xyz_quat([1, 2, 3], [0, 0, math.sqrt(0.5), math.sqrt(0.5)])
    np.testing.assert_allclose(T[:3, :3], rot_z(math.pi / 2), atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    # the KITTI-like LiDAR->camera rotation (x fwd, y left, z up -> z fwd, x right, y down)
    R = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0.0]])
    q = quat_xyzw_from_matrix(R)
    np.testing.assert_allclose(matrix_from_xyz_quat([0, 0, 0], q)[:3, :3], R, atol=1e-12)
    np.testing.assert_allclose(q, [0.5, -0.5, 0.5, 0.5], atol=1e-12)


def test_quaternion_roundtrip_random(rng):
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = matrix_from_xyz_quat([0, 0, 0], q)[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        q2 = quat_xyzw_from_matrix(R)
        assert min(np.abs(q2 - q).max(), np.abs(q2 + q).max()) < 1e-9


def test_buffer_chain_static():
    buf = TransformBuffer()
    T_base_lidar = rigid(rot_z(0.3), [1.0, 0.0, 1.5])
    T_base_cam = rigid(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0.0]]), [1.2, 0.1, 1.3])
    buf.set_transform("base_link", "lidar", 0, T_base_lidar, static=True)
    buf.set_transform("/base_link", "camera_optical", 0, T_base_cam, static=True)
    T = buf.lookup("camera_optical", "lidar", 123 * S)
    expected = np.linalg.inv(T_base_cam) @ T_base_lidar
    np.testing.assert_allclose(T, expected, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("lidar", "camera_optical"), np.linalg.inv(expected), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("lidar", "lidar"), np.eye(4))
    with pytest.raises(CalibrationError, match="not connected"):
        buf.lookup("camera_optical", "radar")


def test_buffer_dynamic_interpolation_and_extrapolation():
    buf = TransformBuffer()
    buf.set_transform("odom", "base", 10 * S, rigid(rot_z(0.0), [0, 0, 0]), static=False)
    buf.set_transform("odom", "base", 12 * S, rigid(rot_z(0.4), [2.0, 0, 0]), static=False)
    buf.set_transform("base", "lidar", 0, rigid(np.eye(3), [0, 0, 1.0]), static=True)
    T = buf.lookup("odom", "lidar", 11 * S)  # halfway: 0.2 rad, x = 1
    expected = rigid(rot_z(0.2), [1.0, 0, 0]) @ rigid(np.eye(3), [0, 0, 1.0])
    np.testing.assert_allclose(T, expected, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("odom", "lidar", 12 * S), rigid(rot_z(0.4), [2.0, 0, 1.0]), atol=1e-12)
    # time 0 = latest
    np.testing.assert_allclose(buf.lookup("odom", "lidar", 0), rigid(rot_z(0.4), [2.0, 0, 1.0]), atol=1e-12)
    with pytest.raises(CalibrationError, match="known for"):
        buf.lookup("odom", "lidar", 13 * S)
    with pytest.raises(CalibrationError, match="known for"):
        buf.lookup("odom", "lidar", 9 * S)


def test_buffer_cache_time_discards_old():
    buf = TransformBuffer(cache_time_s=1.0)
    for k in range(5):
        buf.set_transform("a", "b", k * S, np.eye(4), static=False)
    with pytest.raises(CalibrationError):
        buf.lookup("a", "b", 2 * S)
    buf.lookup("a", "b", 3 * S + S // 2)


def test_buffer_tf_message():
    def ts(parent, child, sec, xyz, q):
        return SimpleNamespace(
            header=SimpleNamespace(frame_id=parent, stamp=SimpleNamespace(sec=sec, nanosec=0)),
            child_frame_id=child,
            transform=SimpleNamespace(
                translation=SimpleNamespace(x=xyz[0], y=xyz[1], z=xyz[2]),
                rotation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3]),
            ),
        )

    buf = TransformBuffer()
    buf.add_tf_message(SimpleNamespace(transforms=[ts("cam", "velo", 5, (0.1, 0.2, 0.3), (0, 0, 0, 1))]), static=True)
    np.testing.assert_allclose(buf.lookup("cam", "velo", 99 * S), rigid(np.eye(3), [0.1, 0.2, 0.3]))
    refused = buf.add_tf_message(SimpleNamespace(transforms=[ts("", "velo", 5, (0, 0, 0), (0, 0, 0, 1))]), static=True)
    assert len(refused) == 1 and "invalid transform frames" in refused[0]


def test_provider_parameters_win():
    cfg = ExtrinsicsConfig(xyz=(0.0, -0.08, -0.27), quat_xyzw=(0.5, -0.5, 0.5, 0.5), use_tf=True)
    provider = ExtrinsicsProvider(cfg)  # no node needed: tf is not used
    T = provider.lookup("camera", "velo")
    expected = rigid(np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0.0]]), [0.0, -0.08, -0.27])
    np.testing.assert_allclose(T, expected, atol=1e-12)
    M = tuple(float(v) for v in rigid(rot_z(0.1), [1, 2, 3]).ravel())
    provider = ExtrinsicsProvider(ExtrinsicsConfig(matrix=M, kitti_calib_dir="/x"))
    np.testing.assert_allclose(provider.lookup("a", "b"), np.asarray(M).reshape(4, 4))


def test_provider_kitti_dir(tmp_path):
    T_expected = rigid(rot_z(0.05), [0.27, -0.08, -0.06])
    calls = []

    def fake_reader(cam_to_cam, velo_to_cam, camera_index=2):
        calls.append((cam_to_cam.name, velo_to_cam.name, camera_index))
        return SimpleNamespace(camera=None, T_camera_from_velo=T_expected)

    provider = ExtrinsicsProvider(ExtrinsicsConfig(kitti_calib_dir=str(tmp_path)), read_kitti=fake_reader)
    np.testing.assert_allclose(provider.lookup("cam", "velo"), T_expected)
    assert calls == [("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", 2)]


def test_provider_kitti_dir_real(kitti_dc_dir):
    calib = kitti_dc_dir / "raw"
    assert (calib / "calib_velo_to_cam.txt").is_file()
    provider = ExtrinsicsProvider(ExtrinsicsConfig(kitti_calib_dir=str(calib)))
    T = provider.lookup("cam", "velo")
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-5)
    # KITTI: the LiDAR's forward x axis maps to the camera's forward z axis
    assert T[2, 0] > 0.99


def test_provider_without_any_source():
    with pytest.raises(CalibrationError, match="no extrinsics"):
        ExtrinsicsProvider(ExtrinsicsConfig(use_tf=False))
    with pytest.raises(CalibrationError, match="need a node"):
        ExtrinsicsProvider(ExtrinsicsConfig(use_tf=True))
