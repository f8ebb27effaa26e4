"""LiDAR motion compensation (`deskew_points`, `twist_from_poses`) against analytic constant-twist motion."""

from __future__ import annotations

import numpy as np
import pytest

from depth_completion_ros.core.errors import ShapeError
from depth_completion_ros.core.projection import deskew_points, pose_from_twist, twist_from_poses


def _hat(w: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])


def se3_exp(v: np.ndarray, w: np.ndarray, t: float) -> np.ndarray:
    """Pose after `t` seconds at the constant body twist (v m/s, w rad/s): closed-form SE(3) exponential."""
    W = _hat(np.asarray(w, float) * t)
    theta = np.linalg.norm(np.asarray(w, float) * t)
    if theta < 1e-12:
        R, V = np.eye(3) + W, np.eye(3) + W / 2
    else:
        R = np.eye(3) + np.sin(theta) / theta * W + (1 - np.cos(theta)) / theta**2 * W @ W
        V = np.eye(3) + (1 - np.cos(theta)) / theta**2 * W + (theta - np.sin(theta)) / theta**3 * W @ W
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, V @ (np.asarray(v, float) * t)
    return T


def captured_scene(v, w, times: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Static world points (the sensor frame at t = 0) and how the moving sensor saw them at `times`."""
    world = rng.uniform([-40, -40, -2], [40, 40, 3], (times.size, 3))
    seen = np.empty_like(world)
    for i, t in enumerate(times):
        T = se3_exp(v, w, t)  # T_world_from_sensor(t), world = sensor frame at t = 0
        seen[i] = T[:3, :3].T @ (world[i] - T[:3, 3])
    return world, seen


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(3)


def test_linear_motion_is_compensated_exactly(rng) -> None:
    v = np.array([12.0, -0.5, 0.2])
    times = rng.uniform(-0.05, 0.05, 2000)
    world, seen = captured_scene(v, np.zeros(3), times, rng)
    out = deskew_points(seen, v, times=times)
    assert np.abs(out - world).max() < 1e-9
    # float32 input: float32 output, same answer to float32 precision
    out32 = deskew_points(seen.astype(np.float32), v, times=times.astype(np.float32))
    assert out32.dtype == np.float32 and np.abs(out32 - world).max() < 1e-4


def test_yawing_motion_is_exact_to_first_order(rng) -> None:
    """Error O(t^2): within the second-order bound, and a quarter of it at half the speed."""
    v, w = np.array([10.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.8])
    times = rng.uniform(-0.05, 0.05, 2000)
    errors = []
    for k in (1.0, 0.5):
        world, seen = captured_scene(k * v, k * w, times, rng)
        out = deskew_points(seen, k * v, k * w, times=times)
        err = np.linalg.norm(out - world, axis=1)
        r = np.linalg.norm(world, axis=1)
        bound = (np.linalg.norm(k * w) ** 2 * (r + 1) + np.linalg.norm(k * w) * np.linalg.norm(k * v)) * times**2
        assert (err <= bound).all()
        errors.append(err.max())
        uncompensated = np.linalg.norm(seen - world, axis=1).max()
        assert err.max() < 0.02 * uncompensated
    assert 0.2 < errors[1] / errors[0] < 0.3


def test_reference_time_moves_points_to_another_instant(rng) -> None:
    """Points captured at `times` moved to the instant 0.03 s (e.g. a camera's): as seen from there."""
    v = np.array([8.0, 1.0, 0.0])
    times = rng.uniform(-0.05, 0.05, 500)
    world, seen = captured_scene(v, np.zeros(3), times, rng)
    out = deskew_points(seen, v, times=times, reference_time=0.03)
    assert np.allclose(out, world - v * 0.03, atol=1e-9)
    # a cloud captured at one instant (scan_period 0) still moves to the reference instant
    flat = deskew_points(world, v, scan_period=0.0, reference_time=-0.02)
    assert np.allclose(flat, world + v * 0.02)


def test_azimuth_model_matches_per_point_times(rng) -> None:
    pts = rng.uniform(-30, 30, (1000, 4))
    v, w = np.array([5.0, 0.3, 0.0]), np.array([0.0, 0.01, 0.4])
    az = np.arctan2(pts[:, 1], pts[:, 0])
    for clockwise, sign in ((True, -1.0), (False, 1.0)):
        t = sign * az / (2 * np.pi) * 0.1
        a = deskew_points(pts, v, w, scan_period=0.1, clockwise=clockwise, reference_time=0.01)
        b = deskew_points(pts, v, w, times=t, reference_time=0.01)
        assert np.allclose(a, b, atol=1e-9)
        assert np.array_equal(a[:, 3], pts[:, 3])  # extra columns kept


def test_deskew_rejects_bad_input() -> None:
    with pytest.raises(ShapeError, match="times"):
        deskew_points(np.zeros((4, 3)), np.zeros(3), times=np.zeros(3))
    with pytest.raises(ShapeError, match="finite"):
        deskew_points(np.zeros((4, 3)), np.array([np.nan, 0, 0]))
    with pytest.raises(ShapeError, match="scan_period"):
        deskew_points(np.zeros((4, 3)), np.zeros(3), scan_period=-1.0)


@pytest.mark.parametrize("w", [(0.0, 0.0, 0.0), (0.0, 0.0, 0.9), (0.2, -0.1, 1.5), (0.0, 0.0, 2e-7)])
def test_twist_from_poses_recovers_the_twist(w) -> None:
    v, w = np.array([9.0, -0.4, 0.3]), np.array(w)
    T0 = se3_exp([1.0, 2.0, 0.0], [0.0, 0.1, 0.7], 1.0)  # any start pose
    T1 = T0 @ se3_exp(v, w, 0.1)
    v_est, w_est = twist_from_poses(T0, T1, 0.1)
    assert np.allclose(v_est, v, atol=1e-7) and np.allclose(w_est, w, atol=1e-7)
    v_back, w_back = twist_from_poses(T1, T0, -0.1)  # same motion seen backwards
    assert np.allclose(v_back, v, atol=1e-7) and np.allclose(w_back, w, atol=1e-7)
    with pytest.raises(ShapeError, match="dt"):
        twist_from_poses(T0, T1, 0.0)
    assert np.allclose(pose_from_twist(v, w, 0.1), se3_exp(v, w, 0.1), atol=1e-12)
