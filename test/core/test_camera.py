"""CameraModel: validation, projection / unprojection, distortion round trips, binning and ROI."""

from __future__ import annotations

import numpy as np
import pytest

from depth_completion_ros.core.camera import CameraModel, DistortionModel, apply_affine
from depth_completion_ros.core.errors import CalibrationError, ShapeError

K = np.array([[500.0, 0.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]])

DISTORTIONS = {
    DistortionModel.PLUMB_BOB: [-0.28, 0.07, 0.001, -0.0005, 0.0],
    DistortionModel.RATIONAL_POLYNOMIAL: [0.4, -0.1, 0.0008, 0.0003, 0.01, 0.7, -0.05, 0.02],
    DistortionModel.EQUIDISTANT: [-0.01, 0.02, -0.004, 0.0005],
}


def test_pinhole_projection_by_hand() -> None:
    cam = CameraModel(width=640, height=480, K=K)
    uv, z = cam.project(np.array([[1.0, -0.5, 2.0], [0.0, 0.0, 10.0]]))
    assert np.allclose(uv, [[320 + 500 * 0.5, 240 - 480 * 0.25], [320, 240]])
    assert np.allclose(z, [2.0, 10.0])


def test_points_behind_give_nan() -> None:
    cam = CameraModel(width=640, height=480, K=K)
    uv, z = cam.project(np.array([[0.0, 0.0, -1.0], [0.1, 0.1, 0.0]]))
    assert np.isnan(uv).all()
    assert z[0] == -1.0


@pytest.mark.parametrize("model", list(DISTORTIONS))
def test_distortion_round_trip(model: DistortionModel, rng: np.random.Generator) -> None:
    cam = CameraModel(width=640, height=480, K=K, D=np.array(DISTORTIONS[model]), distortion_model=model)
    xy = rng.uniform(-0.6, 0.6, size=(500, 2))
    back = cam.undistort_normalized(cam.distort_normalized(xy))
    assert np.abs(back - xy).max() < 1e-9
    assert np.abs(cam.distort_normalized(xy) - xy).max() > 1e-3  # the distortion is not a no-op


def test_plumb_bob_distortion_matches_formula() -> None:
    k1, k2, p1, p2, k3 = DISTORTIONS[DistortionModel.PLUMB_BOB]
    cam = CameraModel(width=640, height=480, K=K, D=np.array([k1, k2, p1, p2, k3]))
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    expected = [
        x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
        y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y,
    ]
    assert np.allclose(cam.distort_normalized(np.array([[x, y]]))[0], expected)


def test_equidistant_matches_formula() -> None:
    d = DISTORTIONS[DistortionModel.EQUIDISTANT]
    cam = CameraModel(width=640, height=480, K=K, D=np.array(d), distortion_model="equidistant")
    x, y = 0.5, 0.25
    r = np.hypot(x, y)
    th = np.arctan(r)
    thd = th * (1 + d[0] * th**2 + d[1] * th**4 + d[2] * th**6 + d[3] * th**8)
    assert np.allclose(cam.distort_normalized(np.array([[x, y]]))[0], [x * thd / r, y * thd / r])


@pytest.mark.parametrize("model", list(DISTORTIONS))
def test_project_unproject_round_trip(model: DistortionModel, rng: np.random.Generator) -> None:
    cam = CameraModel(width=640, height=480, K=K, D=np.array(DISTORTIONS[model]), distortion_model=model)
    pts = np.column_stack([rng.uniform(-2, 2, 200), rng.uniform(-1.5, 1.5, 200), rng.uniform(3, 30, 200)])
    uv, z = cam.project(pts)
    assert np.allclose(cam.unproject(uv, z), pts, atol=1e-7)


def test_rectified_projection_uses_p_with_baseline() -> None:
    P = np.array([[700.0, 0.0, 600.0, -70.0], [0.0, 700.0, 180.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    cam = CameraModel.from_projection(P, 1242, 375)
    uv, z = cam.project(np.array([[1.0, 0.5, 10.0]]))
    assert np.allclose(uv[0], [(700 * 1 + 600 * 10 - 70) / 10, (700 * 0.5 + 180 * 10) / 10])
    assert np.allclose(cam.unproject(uv, z), [[1.0, 0.5, 10.0]])


def test_binning_and_roi_follow_image_geometry() -> None:
    cam = CameraModel(width=640, height=480, K=K, binning_x=2, binning_y=2, roi=(100, 40, 400, 300))
    assert cam.image_size == (200, 150)
    uv, _ = cam.project(np.array([[0.0, 0.0, 5.0]]))
    assert np.allclose(uv[0], [(320 - 100) / 2, (240 - 40) / 2])


def test_scaled_and_cropped() -> None:
    cam = CameraModel(width=640, height=480, K=K)
    pt = np.array([[0.4, -0.3, 4.0]])
    uv, _ = cam.project(pt)
    uv_half, _ = cam.scaled(0.5, 0.5).project(pt)
    assert np.allclose(uv_half, uv * 0.5)
    crop = cam.cropped(10, 20, 300, 200)
    assert crop.image_size == (300, 200)
    assert np.allclose(crop.project(pt)[0], uv - [10, 20])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"K": np.zeros((3, 3))}, "uncalibrated"),
        ({"K": np.where(np.eye(3) > 0, np.nan, 0.0)}, "NaN"),
        ({"D": np.array([0.1, np.nan, 0, 0, 0])}, "NaN"),
        ({"width": 0}, "size"),
        ({"distortion_model": "fancy"}, "unknown distortion model"),
        ({"rectified": True}, "needs its projection matrix"),
        ({"roi": (600, 0, 100, 100)}, "roi"),
    ],
)
def test_invalid_calibration_is_a_clear_error(kwargs: dict, match: str) -> None:
    args = {"width": 640, "height": 480, "K": K} | kwargs
    with pytest.raises(CalibrationError, match=match):
        CameraModel(**args)


def test_project_checks_shape() -> None:
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        CameraModel(width=640, height=480, K=K).project(np.zeros((4, 2)))


def test_apply_affine_equals_matmul(rng: np.random.Generator) -> None:
    pts = rng.normal(size=(50, 3))
    A, b = rng.normal(size=(2, 3)), rng.normal(size=2)
    assert np.allclose(apply_affine(pts, A, b), pts @ A.T + b)
