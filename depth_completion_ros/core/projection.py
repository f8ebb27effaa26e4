"""Sparse depth in a camera: LiDAR points projected with a z-buffer, and depth-camera registration.

Depth images are (H, W) float32 metres along the target camera's optical axis (camera optical frame,
REP 103), 0 = no measurement.  `T_camera_from_source` (4, 4) maps source-frame points into the camera
frame (the rectified frame for rectified cameras): p_cam = T[:3, :3] @ p_src + T[:3, 3].
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .camera import CameraModel, apply_affine
from .errors import CalibrationError, ShapeError
from .fill import OUTLIER_TOLERANCE, reject_outliers

__all__ = [
    "check_rigid_transform",
    "deskew_points",
    "filter_occluded",
    "finite_points",
    "pose_from_twist",
    "project_points",
    "register_depth",
    "twist_from_poses",
]

_RIGID_TOLERANCE = 1e-3


def check_rigid_transform(T: np.ndarray, name: str = "T_camera_from_source") -> np.ndarray:
    """Return `T` as a (4, 4) float64 array, or raise `CalibrationError` if it is not a finite rigid transform."""
    M = np.asarray(T, dtype=np.float64)
    if M.shape != (4, 4):
        raise CalibrationError(f"{name} must be a 4x4 matrix, got shape {M.shape}")
    if not np.isfinite(M).all():
        raise CalibrationError(f"{name} contains NaN or inf")
    if not np.allclose(M[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise CalibrationError(f"{name} last row must be [0 0 0 1], got {M[3].tolist()}")
    R = M[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=_RIGID_TOLERANCE) or abs(np.linalg.det(R) - 1.0) > _RIGID_TOLERANCE:
        raise CalibrationError(f"{name} is not rigid: its rotation part is not orthonormal with det +1")
    return M


def _points_xyz(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ShapeError(f"points: expected shape (N, 3) or (N, >3), got {pts.shape}")
    return pts[:, :3]


def finite_points(points: np.ndarray) -> np.ndarray:
    """The rows of (N, C) `points` whose values are all finite: `points` itself when every value is (one flat test),
    else a filtered copy (per-column tests: ~25x faster than `isfinite(points).all(axis=1)` on 120k points)."""
    pts = np.asarray(points)
    if pts.ndim != 2:
        raise ShapeError(f"points: expected shape (N, C), got {pts.shape}")
    if np.isfinite(pts).all():
        return pts
    keep = np.isfinite(pts[:, 0])
    for c in range(1, pts.shape[1]):
        keep &= np.isfinite(pts[:, c])
    return pts[keep]


def deskew_points(
    points: np.ndarray,
    linear_velocity: np.ndarray,
    angular_velocity: np.ndarray | None = None,
    *,
    times: np.ndarray | None = None,
    scan_period: float = 0.1,
    clockwise: bool = True,
    reference_time: float = 0.0,
) -> np.ndarray:
    """Motion-compensate a LiDAR scan: every point moved into the sensor frame at one reference instant.

    Each point moves by the sensor's own motion between its capture and the reference instant, to first order
    (constant twist, exact to first order in t): p' = p + (v + w x p) * t, t = capture time - `reference_time`.
    Capture times are the per-point `times` when given, else come from the azimuth model: one revolution per
    `scan_period`, the time origin (0) being the instant the scan faced forward (+x, azimuth 0); KITTI's
    HDL-64 spins clockwise seen from above, so points to the left (+y) were captured before it.  KITTI depth
    completion's velodyne_raw is compensated this way: 84 % of its pixels match an uncompensated projection
    within 1 px, 99.9 % a compensated one (test_projection.py).  `scan_period` 0 means all points were
    captured at time 0 (no skew; `reference_time` still moves them, e.g. to a camera's instant).

    Args:
        points: (N, >=3) sensor frame (REP 103: x forward, y left, z up), metres; extra columns are kept.
        linear_velocity: (3,) sensor velocity in its own frame, m/s.
        angular_velocity: (3,) sensor angular velocity in its own frame, rad/s (default zero).
        times: (N,) capture time of each point, seconds, on the same time axis as `reference_time`
            (overrides the azimuth model).
        scan_period: seconds per revolution (azimuth model), >= 0.
        clockwise: rotation sense seen from above (azimuth model).
        reference_time: the instant the output corresponds to, seconds (0 = the scan's forward instant / the
            origin of `times`).

    Returns:
        (N, same columns) copy with compensated x, y, z: float32 for float32 input, else float64.  One
        compiled pass (about 0.3 ms for 120k points on one core).
    """
    pts = np.asarray(points)
    if pts.dtype not in (np.float32, np.float64):
        pts = pts.astype(np.float64)
    _points_xyz(pts)
    v = np.asarray(linear_velocity, dtype=np.float64).reshape(3)
    w = np.zeros(3) if angular_velocity is None else np.asarray(angular_velocity, dtype=np.float64).reshape(3)
    if not (np.isfinite(v).all() and np.isfinite(w).all() and math.isfinite(reference_time)):
        raise ShapeError("deskew_points: velocities and reference_time must be finite")
    if times is None:
        if scan_period < 0 or not math.isfinite(scan_period):
            raise ShapeError(f"scan_period must be finite and >= 0, got {scan_period}")
        if scan_period == 0:
            t, scale = np.zeros(1, dtype=pts.dtype), 0.0
        else:
            t = np.arctan2(pts[:, 1], pts[:, 0])  # (-pi, pi], 0 = forward, + = left (SIMD in numpy)
            scale = (-1.0 if clockwise else 1.0) * float(scan_period) / (2.0 * math.pi)
    else:
        t = np.asarray(times).reshape(-1)
        if t.shape[0] != pts.shape[0]:
            raise ShapeError(f"times: expected {pts.shape[0]} values, got {t.shape[0]}")
        if t.dtype not in (np.float32, np.float64):
            t = t.astype(np.float64)
        scale = 1.0
    out = np.empty(pts.shape, dtype=pts.dtype)
    _deskew_kernel(pts, t, scale, -float(reference_time), v, w, out)
    return out


@numba.njit(cache=True, nogil=True)
def _deskew_kernel(
    p: np.ndarray, a: np.ndarray, scale: float, offset: float, v: np.ndarray, w: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """out = p + (v + w x p) * (a * scale + offset), row by row (a of length 1 broadcasts); float64 arithmetic."""
    one = a.shape[0] == 1
    for i in range(p.shape[0]):
        x, y, z = float(p[i, 0]), float(p[i, 1]), float(p[i, 2])
        t = float(a[0] if one else a[i]) * scale + offset
        out[i, 0] = x + (v[0] + w[1] * z - w[2] * y) * t
        out[i, 1] = y + (v[1] + w[2] * x - w[0] * z) * t
        out[i, 2] = z + (v[2] + w[0] * y - w[1] * x) * t
        for c in range(3, p.shape[1]):
            out[i, c] = p[i, c]


def pose_from_twist(linear_velocity: np.ndarray, angular_velocity: np.ndarray, dt: float) -> np.ndarray:
    """(4, 4) motion of a frame after `dt` s at a constant body twist (v m/s, w rad/s, in the frame): the SE(3)
    exponential, the inverse of `twist_from_poses` (T1 = T0 @ pose_from_twist(v, w, dt))."""
    v = np.asarray(linear_velocity, dtype=np.float64).reshape(3) * dt
    wt = np.asarray(angular_velocity, dtype=np.float64).reshape(3) * dt
    theta = float(np.linalg.norm(wt))
    W = np.array([[0.0, -wt[2], wt[1]], [wt[2], 0.0, -wt[0]], [-wt[1], wt[0], 0.0]])
    if theta < 1e-9:
        R, V = np.eye(3) + W, np.eye(3) + 0.5 * W
    else:
        a, b = math.sin(theta) / theta, (1.0 - math.cos(theta)) / theta**2
        R = np.eye(3) + a * W + b * (W @ W)
        V = np.eye(3) + b * W + (theta - math.sin(theta)) / theta**3 * (W @ W)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, V @ v
    return T


def twist_from_poses(T0: np.ndarray, T1: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Constant body twist moving a frame from pose `T0` to pose `T1` in `dt` seconds (the SE(3) logarithm).

    Args:
        T0, T1: (4, 4) poses of the moving frame (e.g. `T_odom_from_lidar`) at two instants.
        dt: T1's instant minus T0's, seconds (non-zero).

    Returns:
        (linear velocity (3,) m/s, angular velocity (3,) rad/s) in the moving frame, the `v`, `w` of
        `deskew_points`; exact for motion at a constant body twist (T1 = T0 exp(dt [w, v])).
    """
    if not dt or not math.isfinite(dt):
        raise ShapeError(f"twist_from_poses: dt must be finite and non-zero, got {dt}")
    D = np.linalg.inv(check_rigid_transform(T0, "T0")) @ check_rigid_transform(T1, "T1")
    R, u = D[:3, :3], D[:3, 3]
    cos = min(1.0, max(-1.0, (np.trace(R) - 1.0) / 2.0))
    theta = math.acos(cos)
    W = (R - R.T) / 2.0
    if theta < 1e-6:
        omega_hat = W  # small angle: log R = (R - R^T) / 2 to first order
        V_inv = np.eye(3) - 0.5 * omega_hat
    else:
        omega_hat = W * (theta / math.sin(theta))
        half = theta / 2.0
        coef = (1.0 - half * math.cos(half) / math.sin(half)) / theta**2
        V_inv = np.eye(3) - 0.5 * omega_hat + coef * (omega_hat @ omega_hat)
    omega = np.array([omega_hat[2, 1], omega_hat[0, 2], omega_hat[1, 0]])
    return V_inv @ u / dt, omega / dt


def _row(a: np.ndarray, b: np.float32, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """a[0] X + a[1] Y + a[2] Z + b for contiguous float32 columns, with one temporary."""
    out = X * a[0]
    out += Y * a[1]
    out += Z * a[2]
    out += b
    return out


def _zbuffer(idx: np.ndarray, z: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest depth per pixel from flat pixel indices (v * width + u) already inside the image."""
    flat = np.zeros(width * height, dtype=np.float32)  # lazily zeroed pages: no full-image pass
    flat[idx] = np.inf  # only the touched pixels start at +inf
    np.minimum.at(flat, idx, z)
    return flat.reshape(height, width)


# Points are processed in bounded chunks with in-place arithmetic: fewer and smaller temporaries are recycled by
# the allocator instead of being fresh pages on every call (page faults made a 122k-point scan 3.8 ms, now ~1 ms).
_CHUNK = 65536


def _pixels_linear(
    xyz: np.ndarray, A: np.ndarray, b: np.ndarray, min_depth: float, max_depth: float, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel index (int32; int64 past 2**31 pixels) and float32 depth of the points landing in the image.

    For a linear camera: A (3, 3), b (3,) float32 map source points to homogeneous pixels (depth row last).
    """
    index_type = np.int32 if width * height < 2**31 else np.int64
    idx_parts, z_parts = [], []
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # inf/NaN points fail the masks
        for s in range(0, xyz.shape[0], _CHUNK):
            X, Y, Z = (np.ascontiguousarray(xyz[s : s + _CHUNK, j], dtype=np.float32) for j in range(3))
            z = _row(A[2], b[2], X, Y, Z)
            keep = (z > min_depth) & (z <= max_depth)  # False for NaN
            X, Y, Z, z = X[keep], Y[keep], Z[keep], z[keep]
            u = _row(A[0], b[0], X, Y, Z)
            u /= z
            u += 0.5
            np.floor(u, out=u)
            v = _row(A[1], b[1], X, Y, Z)
            v /= z
            v += 0.5
            np.floor(v, out=v)
            inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)  # False for NaN from inf points
            iv = v[inside].astype(index_type)
            iv *= width
            iv += u[inside].astype(index_type)
            idx_parts.append(iv)
            z_parts.append(z[inside])
    if not idx_parts:
        return np.zeros(0, index_type), np.zeros(0, np.float32)
    return np.concatenate(idx_parts), np.concatenate(z_parts)


def project_points(
    points: np.ndarray,
    T_camera_from_source: np.ndarray,
    camera: CameraModel,
    *,
    min_depth: float = 0.1,
    max_depth: float = float("inf"),
) -> np.ndarray:
    """Project source-frame points into `camera` and keep the nearest per pixel.

    Args:
        points: (N, 3) or (N, >3) points in the source frame (e.g. LiDAR), metres; extra columns ignored,
            NaN/inf points ignored.
        T_camera_from_source: (4, 4) rigid transform source -> camera optical frame.
        camera: target camera; raw cameras apply distortion, rectified ones project with P.
        min_depth, max_depth: keep points with min_depth < z <= max_depth (metres).

    Returns:
        (H, W) float32 depth in metres (camera optical frame), 0 where no point landed; (W, H) is
        `camera.image_size`.  A point lands in pixel (floor(u + 0.5), floor(v + 0.5)).
    """
    T = check_rigid_transform(T_camera_from_source)
    xyz = _points_xyz(points)
    width, height = camera.image_size
    M = camera.projection_matrix
    if camera.rectified or not camera.has_distortion:
        # One affine map source -> homogeneous pixels, in float32 (sub-mm at 1 km); the depth row first so
        # that u, v are computed only for points in front of the camera.
        A = (M[:, :3] @ T[:3, :3]).astype(np.float32)
        b = (M[:, :3] @ T[:3, 3] + M[:, 3]).astype(np.float32)
        idx, z = _pixels_linear(xyz, A, b, min_depth, max_depth, width, height)
        return _zbuffer(idx, z, width, height)
    p = apply_affine(xyz, T[:3, :3], T[:3, 3])
    z = p[:, 2]
    keep = (z > min_depth) & (z <= max_depth)
    p = p[keep]
    z = p[:, 2]
    xy = p[:, :2] / z[:, None]
    # Distortion polynomials fold far-off-axis points back into the image: drop points outside the
    # undistorted field of view (with margin) before distorting.
    lo, hi = _normalized_bounds(camera)
    inside = np.all((xy >= lo) & (xy <= hi), axis=1)
    xy, z = xy[inside], z[inside]
    uv = apply_affine(camera.distort_normalized(xy), M[:2, :2], M[:2, 2])
    ui = np.floor(uv[:, 0] + 0.5)
    vi = np.floor(uv[:, 1] + 0.5)
    inside = (ui >= 0) & (ui < width) & (vi >= 0) & (vi < height)
    idx = vi[inside].astype(np.intp) * width + ui[inside].astype(np.intp)
    return _zbuffer(idx, z[inside].astype(np.float32), width, height)


_BOUNDS_CACHE: dict[int, tuple[np.ndarray, np.ndarray, CameraModel]] = {}


def _normalized_bounds(camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """Box in normalized coordinates holding the undistorted image border, enlarged by 20 %."""
    cached = _BOUNDS_CACHE.get(id(camera))
    if cached is not None and cached[2] is camera:
        return cached[0], cached[1]
    w, h = camera.image_size
    s = np.linspace(0.0, 1.0, 64)
    border = np.concatenate(
        [
            np.column_stack([s * (w - 1), np.zeros_like(s)]),
            np.column_stack([s * (w - 1), np.full_like(s, h - 1)]),
            np.column_stack([np.zeros_like(s), s * (h - 1)]),
            np.column_stack([np.full_like(s, w - 1), s * (h - 1)]),
        ]
    )
    M = camera.projection_matrix
    Ainv = np.linalg.inv(M[:2, :2])
    xy = camera.undistort_normalized(apply_affine(border, Ainv, -Ainv @ M[:2, 2]))
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    margin = 0.2 * (hi - lo)
    if len(_BOUNDS_CACHE) > 16:
        _BOUNDS_CACHE.clear()
    _BOUNDS_CACHE[id(camera)] = (lo - margin, hi + margin, camera)
    return lo - margin, hi + margin


def filter_occluded(depth: np.ndarray, *, tolerance: float = OUTLIER_TOLERANCE) -> np.ndarray:
    """Remove LiDAR points seen "through" foreground objects (LiDAR–camera parallax).

    A point is dropped when it lies more than `tolerance` (relative) behind the near surface that the
    surrounding points form; the neighbourhood scales with the measured point spacing, so it works for
    any sensor density.  The same test the default completer applies before filling.

    Args:
        depth: (H, W) float32 sparse depth, metres, 0 = missing.

    Returns:
        (H, W) float32, a copy with occluded points set to 0.
    """
    return reject_outliers(depth, tolerance=tolerance)  # the one implementation; fill owns the density statistics


def register_depth(
    depth_src: np.ndarray,
    src_camera: CameraModel,
    dst_camera: CameraModel,
    T_dst_from_src: np.ndarray,
    *,
    min_depth: float = 0.1,
    max_depth: float = float("inf"),
) -> np.ndarray:
    """Register a depth camera's image into another camera (back-project, transform, z-buffer re-project).

    Args:
        depth_src: (Hs, Ws) float depth of the source camera, metres, 0/NaN = missing; (Ws, Hs) must be
            `src_camera.image_size`.
        src_camera, dst_camera: the depth camera and the target (RGB) camera.
        T_dst_from_src: (4, 4) rigid transform source optical frame -> target optical frame.

    Returns:
        (H, W) float32 depth in the target camera, metres, 0 = missing.
    """
    d = np.asarray(depth_src, dtype=np.float32)
    w, h = src_camera.image_size
    if d.shape != (h, w):
        raise ShapeError(f"depth image is {d.shape[1]}x{d.shape[0]} but its camera is {w}x{h}")
    valid = np.isfinite(d) & (d > 0)
    v, u = np.nonzero(valid)
    uv = np.column_stack([u, v]).astype(np.float64)
    pts = src_camera.unproject(uv, d[valid].astype(np.float64))
    if src_camera.rectified:
        # Rectified frame -> the camera's optical frame is R^T (identity for monocular drivers).
        pts = apply_affine(pts, src_camera.R.T, np.zeros(3))
    T = check_rigid_transform(T_dst_from_src, "T_dst_from_src")
    if dst_camera.rectified:
        T = np.block([[dst_camera.R, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]]) @ T
    return project_points(pts, T, dst_camera, min_depth=min_depth, max_depth=max_depth)
