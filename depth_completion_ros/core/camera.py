"""The one camera model of the package (pinhole + distortion, as sensor_msgs/CameraInfo describes it).

Frames: points are in the camera optical frame (REP 103: x right, y down, z forward), metres.
Pixels are (u, v) = (column, row), with the centre of the top-left pixel at (0, 0).
Binning and ROI follow image_geometry's PinholeCameraModel: K, D, R, P describe the full-resolution
sensor; the image this model projects into is the ROI, downsampled by the binning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property

import numpy as np

from .errors import CalibrationError, ShapeError

__all__ = ["CameraModel", "DistortionModel", "apply_affine"]

_UNDISTORT_ITERATIONS = 20

MAX_IMAGE_SIDE = 65536
"""Largest accepted image width / height, pixels."""

FOCAL_RANGE = (1e-3, 1e3)
"""Accepted focal lengths (fx, fy), as multiples of the larger image side: 1e-3 is a field of view far beyond
any fisheye's, 1e3 one of 0.06 degrees."""

MAX_ASPECT = 10.0
"""Largest accepted fx/fy (or fy/fx) ratio."""

MAX_SKEW = 0.1
"""Largest accepted |skew| (K[0,1], P[0,1]) as a fraction of fx (real cameras: 0)."""

PRINCIPAL_POINT_MARGIN = 10.0
"""The principal point may lie this many image sizes outside the image (crops move it outside)."""


def _check_intrinsics(name: str, M: np.ndarray, width: int, height: int) -> None:
    """Check the (3, 3) intrinsic part of K or P against the sensor size; raise CalibrationError naming the entry."""
    fx, fy, skew, cx, cy = M[0, 0], M[1, 1], M[0, 1], M[0, 2], M[1, 2]
    side = max(width, height)
    for entry, f in (("[0,0] (fx)", fx), ("[1,1] (fy)", fy)):
        if not f > 0:
            raise CalibrationError(f"{name}{entry} = {f:g}: focal lengths must be > 0")
        lo, hi = FOCAL_RANGE[0] * side, FOCAL_RANGE[1] * side
        if not lo <= f <= hi:
            raise CalibrationError(
                f"{name}{entry} = {f:g} px is not a physical focal length for a {width}x{height} image "
                f"(accepted {lo:g}..{hi:g} px)"
            )
    if not 1.0 / MAX_ASPECT <= fx / fy <= MAX_ASPECT:
        raise CalibrationError(
            f"{name}: fx/fy = {fx / fy:g} (fx {fx:g}, fy {fy:g}) is beyond 1/{MAX_ASPECT:g}..{MAX_ASPECT:g}"
        )
    if abs(skew) > MAX_SKEW * fx:
        raise CalibrationError(f"{name}[0,1] (skew) = {skew:g}: more than {MAX_SKEW:g}·fx ({MAX_SKEW * fx:g})")
    m = PRINCIPAL_POINT_MARGIN
    if not (-m * width <= cx <= (1 + m) * width and -m * height <= cy <= (1 + m) * height):
        raise CalibrationError(f"{name}: principal point ({cx:g}, {cy:g}) is far outside the {width}x{height} image")
    if abs(M[1, 0]) > 1e-6 * fy or np.abs(M[2] - [0.0, 0.0, 1.0]).max() > 1e-6:
        raise CalibrationError(
            f"{name}: not an intrinsic matrix (row 2 must be [0 0 1] and [1,0] zero), rows {M[1:].tolist()}"
        )


def apply_affine(points: np.ndarray, A: np.ndarray, b: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """(N, k) points -> (N, m) = points @ A.T + b, computed column by column.

    numpy's BLAS path for an (N, 3) @ (3, 3) product is slow (~20x) on some OpenBLAS builds; three fused
    column expressions are memory-bound and fast everywhere.
    """
    A = np.asarray(A, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    cols = [np.asarray(points[:, j], dtype=dtype) for j in range(A.shape[1])]
    out = np.empty((len(cols[0]), A.shape[0]), dtype=dtype)
    for i in range(A.shape[0]):
        acc = cols[0] * A[i, 0]
        for j in range(1, A.shape[1]):
            acc += cols[j] * A[i, j]
        acc += b[i]
        out[:, i] = acc
    return out


class DistortionModel(str, Enum):
    """Distortion models named as in sensor_msgs/distortion_models."""

    PLUMB_BOB = "plumb_bob"  # k1 k2 p1 p2 k3
    RATIONAL_POLYNOMIAL = "rational_polynomial"  # k1 k2 p1 p2 k3 k4 k5 k6
    EQUIDISTANT = "equidistant"  # k1 k2 k3 k4 (fisheye)


@dataclass(frozen=True, eq=False)
class CameraModel:
    """Intrinsics and distortion of one camera, following sensor_msgs/CameraInfo semantics.

    Attributes:
        width, height: image size in pixels of the full-resolution sensor image (CameraInfo width/height).
        K: (3, 3) intrinsics of the raw (distorted) image.
        D: (n,) distortion coefficients for `distortion_model` (empty or zeros = none).
        distortion_model: see `DistortionModel`.
        R: (3, 3) rectification rotation (raw camera frame -> rectified frame).
        P: (3, 4) projection of the rectified image (P[:, 3] carries the stereo baseline).
        binning_x, binning_y: CameraInfo binning (0 or 1 = none); the image is downsampled by it.
        roi: (x_offset, y_offset, width, height) in full-resolution pixels; (0, 0, 0, 0) = full image.
        rectified: True if images from this camera are already rectified (project with P, no distortion);
            False if they are raw (project with K and D).

    Raises:
        CalibrationError: on construction, naming the field, for an uncalibrated (K[0] == 0), non-finite or
            non-physical calibration: focal lengths outside `FOCAL_RANGE` of the image size, fx/fy beyond
            `MAX_ASPECT`, skew above `MAX_SKEW`·fx, a principal point far outside the image, K or P[:, :3] not of
            the upper-triangular intrinsic form, an R that is not a rotation, a size above `MAX_IMAGE_SIDE`.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: DistortionModel = DistortionModel.PLUMB_BOB
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray | None = None
    binning_x: int = 1
    binning_y: int = 1
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)
    rectified: bool = False

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3):
            raise CalibrationError(f"camera K must be 3x3, got shape {K.shape}")
        if not np.isfinite(K).all():
            raise CalibrationError("camera K contains NaN or inf")
        if K[0, 0] == 0.0:
            raise CalibrationError("camera is uncalibrated (K[0] == 0): run camera calibration or set intrinsics")
        if not (0 < int(self.width) <= MAX_IMAGE_SIDE and 0 < int(self.height) <= MAX_IMAGE_SIDE):
            raise CalibrationError(
                f"camera size must be positive and at most {MAX_IMAGE_SIDE}, got {self.width}x{self.height}"
            )
        _check_intrinsics("K", K, int(self.width), int(self.height))
        D = np.asarray(self.D, dtype=np.float64).reshape(-1)
        if not np.isfinite(D).all():
            raise CalibrationError(f"distortion D contains NaN or inf: {D.tolist()}")
        R = np.asarray(self.R, dtype=np.float64)
        if R.shape != (3, 3) or not np.isfinite(R).all():
            raise CalibrationError(f"rectification R must be a finite 3x3 matrix, got shape {R.shape}")
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or abs(np.linalg.det(R) - 1.0) > 1e-3:
            raise CalibrationError(f"rectification R is not a rotation (orthonormal, det +1): {R.tolist()}")
        P = None if self.P is None else np.asarray(self.P, dtype=np.float64)
        if P is not None and (P.shape != (3, 4) or not np.isfinite(P).all()):
            raise CalibrationError(f"projection P must be a finite 3x4 matrix, got shape {P.shape}")
        if P is not None and P[0, 0] <= 0:
            raise CalibrationError("projection P is uncalibrated (P[0] <= 0)")
        if P is not None:
            _check_intrinsics("P", P[:, :3], int(self.width), int(self.height))
        if self.rectified and P is None:
            raise CalibrationError("a rectified camera needs its projection matrix P")
        try:
            model = DistortionModel(self.distortion_model)
        except ValueError:
            names = ", ".join(m.value for m in DistortionModel)
            raise CalibrationError(f"unknown distortion model {self.distortion_model!r} (known: {names})") from None
        limit = {DistortionModel.EQUIDISTANT: 4, DistortionModel.PLUMB_BOB: 5}.get(model, 8)
        if D.size > limit and np.any(D[limit:] != 0):
            raise CalibrationError(f"{model.value} takes at most {limit} coefficients, got {D.size}")
        x0, y0, rw, rh = (int(v) for v in self.roi)
        if min(x0, y0, rw, rh) < 0 or x0 + rw > self.width or y0 + rh > self.height:
            raise CalibrationError(f"roi {self.roi} outside the {self.width}x{self.height} sensor")
        for name, binning, side in (
            ("binning_x", self.binning_x, rw or self.width),
            ("binning_y", self.binning_y, rh or self.height),
        ):
            if not 0 <= int(binning) <= side:
                raise CalibrationError(f"{name} = {binning}: must be in 0..{side} (the image would be empty)")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", D)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "P", P)
        object.__setattr__(self, "distortion_model", model)
        object.__setattr__(self, "binning_x", max(1, int(self.binning_x)))
        object.__setattr__(self, "binning_y", max(1, int(self.binning_y)))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "roi", (x0, y0, rw, rh))

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_projection(cls, P: np.ndarray, width: int, height: int) -> CameraModel:
        """A rectified camera from its (3, 4) projection matrix (e.g. KITTI P_rect_0x)."""
        P = np.asarray(P, dtype=np.float64)
        if P.shape != (3, 4):
            raise CalibrationError(f"projection P must be 3x4, got shape {P.shape}")
        return cls(width=width, height=height, K=P[:, :3].copy(), P=P, rectified=True)

    def scaled(self, sx: float, sy: float) -> CameraModel:
        """The same camera for an image resized by (sx, sy) (full-resolution size scales too)."""
        S = np.diag([sx, sy, 1.0])
        return replace(
            self,
            width=round(self.width * sx),
            height=round(self.height * sy),
            K=S @ self.K,
            P=None if self.P is None else S @ self.P,
            roi=(round(self.roi[0] * sx), round(self.roi[1] * sy), round(self.roi[2] * sx), round(self.roi[3] * sy)),
        )

    def cropped(self, x0: int, y0: int, w: int, h: int) -> CameraModel:
        """The same camera for the crop [y0:y0+h, x0:x0+w] of its current image (as a new full image)."""
        T = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        B = np.diag([1.0 / self.binning_x, 1.0 / self.binning_y, 1.0])
        off = np.array([[1.0, 0.0, -self.roi[0]], [0.0, 1.0, -self.roi[1]], [0.0, 0.0, 1.0]])
        A = T @ B @ off
        return CameraModel(
            width=w,
            height=h,
            K=A @ self.K,
            D=self.D,
            distortion_model=self.distortion_model,
            R=self.R,
            P=None if self.P is None else A @ self.P,
            rectified=self.rectified,
        )

    # -- geometry -----------------------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) in pixels of the images this model projects into (after ROI and binning)."""
        w = self.roi[2] or self.width
        h = self.roi[3] or self.height
        return w // self.binning_x, h // self.binning_y

    @cached_property
    def _image_transform(self) -> np.ndarray:
        """(3, 3) full-resolution pixels -> image pixels (ROI offset, then binning)."""
        return np.array(
            [
                [1.0 / self.binning_x, 0.0, -self.roi[0] / self.binning_x],
                [0.0, 1.0 / self.binning_y, -self.roi[1] / self.binning_y],
                [0.0, 0.0, 1.0],
            ]
        )

    @cached_property
    def projection_matrix(self) -> np.ndarray:
        """(3, 4) matrix used to project points, in image pixels: P (rectified) or K [I | 0] (raw, after distortion)."""
        M = self.P if self.rectified else np.hstack([self.K, np.zeros((3, 1))])
        return self._image_transform @ M

    @property
    def has_distortion(self) -> bool:
        """True when raw images are distorted (some D coefficient is non-zero)."""
        return bool(self.D.size) and bool(np.any(self.D != 0))

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project points into the image.

        Args:
            points: (N, 3) points in this camera's optical frame (the rectified frame when `rectified`), metres.

        Returns:
            uv: (N, 2) float64 pixel coordinates; z: (N,) float64 depth of each point along the optical axis
            (with P's translation column applied, as the KITTI devkit does).  Points with z <= 0 get NaN uv.
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ShapeError(f"points: expected shape (N, 3), got {pts.shape}")
        M = self.projection_matrix
        if self.rectified or not self.has_distortion:
            x = apply_affine(pts, M[:, :3], M[:, 3])
            z = x[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                uv = x[:, :2] / z[:, None]
        else:
            z = pts[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                xy = pts[:, :2] / z[:, None]
            xy = self.distort_normalized(xy)
            uv = apply_affine(xy, M[:2, :2], M[:2, 2])
        uv[~(z > 0)] = np.nan
        return uv, z

    def unproject(self, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Inverse of `project`: (N, 2) pixels and (N,) depths (metres) -> (N, 3) points, camera optical frame."""
        uv = np.asarray(uv, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        if uv.ndim != 2 or uv.shape[1] != 2 or uv.shape[0] != z.shape[0]:
            raise ShapeError(f"unproject: uv (N, 2) and z (N,) expected, got {uv.shape} and {z.shape}")
        M = self.projection_matrix
        if self.rectified or not self.has_distortion:
            rhs = np.stack([uv[:, 0] * z, uv[:, 1] * z, z], axis=1)
            Minv = np.linalg.inv(M[:, :3])
            return apply_affine(rhs, Minv, -Minv @ M[:, 3])
        Ainv = np.linalg.inv(M[:2, :2])
        xy = self.undistort_normalized(apply_affine(uv, Ainv, -Ainv @ M[:2, 2]))
        return np.column_stack([xy * z[:, None], z])

    def distort_normalized(self, xy: np.ndarray) -> np.ndarray:
        """Apply the distortion model to (N, 2) normalized image coordinates (x/z, y/z)."""
        xy = np.asarray(xy, dtype=np.float64)
        if not self.has_distortion:
            return xy.copy()
        x, y = xy[:, 0], xy[:, 1]
        d = self._poly_coefficients
        if self.distortion_model is DistortionModel.EQUIDISTANT:
            r = np.hypot(x, y)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1 + t2 * (d[0] + t2 * (d[1] + t2 * (d[2] + t2 * d[3]))))
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(r > 1e-12, theta_d / r, 1.0)
            return xy * scale[:, None]
        k1, k2, p1, p2, k3, k4, k5, k6 = d
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.column_stack([xd, yd])

    def undistort_normalized(self, xy_distorted: np.ndarray) -> np.ndarray:
        """Invert `distort_normalized` iteratively (fixed point, as OpenCV's undistortPoints)."""
        xyd = np.asarray(xy_distorted, dtype=np.float64)
        if not self.has_distortion:
            return xyd.copy()
        if self.distortion_model is DistortionModel.EQUIDISTANT:
            d = np.zeros(4)
            d[: min(4, self.D.size)] = self.D[:4]
            theta_d = np.hypot(xyd[:, 0], xyd[:, 1])
            theta = theta_d.copy()
            for _ in range(_UNDISTORT_ITERATIONS):  # Newton on theta(1 + k1 t^2 + ...) = theta_d
                t2 = theta * theta
                f = theta * (1 + t2 * (d[0] + t2 * (d[1] + t2 * (d[2] + t2 * d[3])))) - theta_d
                df = 1 + t2 * (3 * d[0] + t2 * (5 * d[1] + t2 * (7 * d[2] + t2 * 9 * d[3])))
                theta = theta - f / df
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(theta_d > 1e-12, np.tan(theta) / theta_d, 1.0)
            return xyd * scale[:, None]
        k1, k2, p1, p2, k3, k4, k5, k6 = self._poly_coefficients
        xy = xyd.copy()
        for _ in range(_UNDISTORT_ITERATIONS):  # x = (x_d - tangential(x)) / radial(x)
            x, y = xy[:, 0], xy[:, 1]
            r2 = x * x + y * y
            radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
            dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
            dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
            xy = np.column_stack([(xyd[:, 0] - dx) / radial, (xyd[:, 1] - dy) / radial])
        return xy

    @cached_property
    def _poly_coefficients(self) -> np.ndarray:
        """k1 k2 p1 p2 k3 k4 k5 k6, zero-padded (plumb_bob and rational_polynomial)."""
        d = np.zeros(8)
        d[: min(8, self.D.size)] = self.D[:8]
        return d
