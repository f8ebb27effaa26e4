"""Calibration readers: KITTI (raw-data and object-benchmark formats) and the ROS camera-calibration YAML.

Both give the rectified camera model of colour camera `camera_index` (2 = left colour, 3 = right colour)
and `T_camera_from_velo` (4, 4), which maps Velodyne points (metres) into that camera's own optical frame
(rectified, REP 103).  The stereo baseline in P_rect_0x / P2 is folded into the transform, so the model's
P has a zero last column and projected depth is the true z in that camera.

`read_camera_info_yaml` reads the YAML that ROS `camera_calibration` writes (and `camera_info_manager` reads):
image_width, image_height, camera_name, camera_matrix, distortion_model, distortion_coefficients,
rectification_matrix, projection_matrix (matrices as {rows, cols, data}).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from .camera import CameraModel, DistortionModel
from .errors import CalibrationError, DataError
from .files import check_image_pixels
from .files import image_size as header_image_size

__all__ = [
    "KittiCalibration",
    "parse_kitti_calib_file",
    "read_camera_info_yaml",
    "read_kitti_object_calibration",
    "read_kitti_oxts_motion",
    "read_kitti_raw_calibration",
]


class KittiCalibration(NamedTuple):
    """Camera model and LiDAR extrinsics of one KITTI colour camera."""

    camera: CameraModel
    T_camera_from_velo: np.ndarray


def parse_kitti_calib_file(path: str | Path) -> dict[str, np.ndarray]:
    """Parse `key: v1 v2 ...` lines into float64 arrays (non-numeric values such as calib_time are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"KITTI calibration file not found: {path}")
    out: dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        try:
            out[key.strip()] = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            continue
    return out


def _get(values: dict[str, np.ndarray], key: str, size: int, path: Path) -> np.ndarray:
    if key not in values:
        raise CalibrationError(f"{path.name}: missing key {key!r}")
    v = values[key]
    if v.size != size or not np.isfinite(v).all():
        raise CalibrationError(f"{path.name}: {key} must have {size} finite values, got {v.size}")
    return v


def _homogeneous(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _from_rectified_projection(
    P: np.ndarray, T_rect0_from_velo: np.ndarray, width: int, height: int
) -> KittiCalibration:
    """Fold P's last column (baseline) into the extrinsic; P = K [I | K^-1 p4]."""
    K = P[:, :3]
    shift = np.linalg.solve(K, P[:, 3])
    T = _homogeneous(np.eye(3), shift) @ T_rect0_from_velo
    camera = CameraModel.from_projection(np.hstack([K, np.zeros((3, 1))]), width, height)
    return KittiCalibration(camera, T)


def read_kitti_raw_calibration(
    cam_to_cam: str | Path, velo_to_cam: str | Path, camera_index: int = 2
) -> KittiCalibration:
    """Read KITTI raw calibration (`calib_cam_to_cam.txt`, `calib_velo_to_cam.txt`).

    Uses P_rect_0x, S_rect_0x (image size), R_rect_00 and the velodyne R, T.

    Raises:
        CalibrationError: missing file or key, or malformed values.
    """
    cam_to_cam, velo_to_cam = Path(cam_to_cam), Path(velo_to_cam)
    cam = parse_kitti_calib_file(cam_to_cam)
    velo = parse_kitti_calib_file(velo_to_cam)
    i = int(camera_index)
    P = _get(cam, f"P_rect_0{i}", 12, cam_to_cam).reshape(3, 4)
    size = _get(cam, f"S_rect_0{i}", 2, cam_to_cam)
    R_rect = _get(cam, "R_rect_00", 9, cam_to_cam).reshape(3, 3)
    R = _get(velo, "R", 9, velo_to_cam).reshape(3, 3)
    t = _get(velo, "T", 3, velo_to_cam)
    T_rect0 = _homogeneous(R_rect, np.zeros(3)) @ _homogeneous(R, t)
    return _from_rectified_projection(P, T_rect0, round(size[0]), round(size[1]))


def read_kitti_object_calibration(
    path: str | Path, camera_index: int = 2, *, image_size: tuple[int, int] | None = None
) -> KittiCalibration:
    """Read a KITTI object-benchmark calibration file (P0..P3, R0_rect, Tr_velo_to_cam).

    Args:
        path: the `calib/NNNNNN.txt` file.
        camera_index: 0..3 (2 = left colour).
        image_size: (width, height); default: read from the sibling `image_{camera_index}/NNNNNN.png`
            if it exists, else the usual 1242x375.
    """
    path = Path(path)
    values = parse_kitti_calib_file(path)
    P = _get(values, f"P{int(camera_index)}", 12, path).reshape(3, 4)
    R_rect = _get(values, "R0_rect", 9, path).reshape(3, 3)
    Tr = _get(values, "Tr_velo_to_cam", 12, path).reshape(3, 4)
    if image_size is None:
        image_size = _sibling_image_size(path, camera_index) or (1242, 375)
    T_rect0 = _homogeneous(R_rect, np.zeros(3)) @ _homogeneous(Tr[:, :3], Tr[:, 3])
    return _from_rectified_projection(P, T_rect0, int(image_size[0]), int(image_size[1]))


def _sibling_image_size(calib_path: Path, camera_index: int) -> tuple[int, int] | None:
    """(w, h) of the image with the same frame id under ../image_<i>/, if any (KITTI object layout)."""
    frame = calib_path.stem
    for d in calib_path.parent.parent.glob(f"image_{int(camera_index)}"):
        for img in sorted(d.glob(f"*{frame.lstrip('0') or '0'}.png")):
            if img.stem.lstrip("0") == frame.lstrip("0"):
                try:
                    size = header_image_size(img)  # from the header: nothing decoded
                except (OSError, DataError):
                    continue
                if size is not None:
                    check_image_pixels(*size, what=f"image {img} beside {calib_path}")
                    return size
    return None


def read_kitti_oxts_motion(
    oxts_path: str | Path, imu_to_velo: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Velocity of the Velodyne from one KITTI OXTS record (`oxts/data/NNNNNNNNNN.txt`).

    Returns:
        (linear velocity (3,) m/s, angular velocity (3,) rad/s), in the Velodyne frame (x forward, y left,
        z up): OXTS vf, vl, vu and wf, wl, wu, rotated by `calib_imu_to_velo.txt` when given (the lever
        arm's contribution w x r is included).
    """
    path = Path(oxts_path)
    if not path.is_file():
        raise CalibrationError(f"KITTI OXTS file not found: {path}")
    try:
        values = np.array([float(x) for x in path.read_text().split()], dtype=np.float64)
    except ValueError as exc:
        raise CalibrationError(f"{path.name}: not an OXTS record ({exc})") from None
    if values.size < 23 or not np.isfinite(values[8:23]).all():
        raise CalibrationError(f"{path.name}: expected 30 finite OXTS values, got {values.size}")
    v_imu, w_imu = values[8:11], values[20:23]
    if imu_to_velo is None:
        return v_imu, w_imu
    calib = parse_kitti_calib_file(imu_to_velo)
    R = _get(calib, "R", 9, Path(imu_to_velo)).reshape(3, 3)
    t = _get(calib, "T", 3, Path(imu_to_velo))
    w_velo = R @ w_imu
    # The Velodyne sits at -R^T t from the IMU; its velocity gains w x (that lever arm).
    lever_imu = -R.T @ t
    v_velo = R @ (v_imu + np.cross(w_imu, lever_imu))
    return v_velo, w_velo


_MAX_YAML_BYTES = 1 << 20


def read_camera_info_yaml(path: str | Path, *, rectified: bool = True) -> CameraModel:
    """The camera model of a ROS camera-calibration YAML file.

    Args:
        path: the file (as written by `camera_calibration` / read by `camera_info_manager`).
        rectified: the images it goes with are rectified (project with P, K' = P[:3, :3]); False for raw images
            (project with camera_matrix and the distortion).

    Returns:
        CameraModel of the full image_width x image_height image.

    Raises:
        CalibrationError: missing / unreadable / non-YAML file, a missing field, a matrix whose data does not
            have rows x cols numbers, or values `CameraModel` refuses (uncalibrated, NaN, unknown distortion).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"camera info file not found: {p}")
    if p.stat().st_size > _MAX_YAML_BYTES:
        raise CalibrationError(f"{p}: too large for a camera calibration file ({p.stat().st_size} bytes)")
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CalibrationError(f"{p}: not a readable YAML file ({first})") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"{p}: expected a YAML mapping with camera_matrix etc., got {type(data).__name__}")

    def size(key: str) -> int:
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise CalibrationError(f"{p}: {key} must be a positive integer, got {v!r}")
        return v

    def matrix(key: str, shape: tuple[int, int] | None, *, required: bool = True) -> np.ndarray | None:
        m = data.get(key)
        if m is None and not required:
            return None
        if not isinstance(m, dict) or not {"rows", "cols", "data"} <= set(m):
            raise CalibrationError(f"{p}: {key} must be a mapping with rows, cols and data")
        rows, cols, values = m["rows"], m["cols"], m["data"]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (rows, cols)):
            raise CalibrationError(f"{p}: {key} rows / cols must be integers, got {rows!r} / {cols!r}")
        if not isinstance(values, list) or len(values) != rows * cols:
            n = len(values) if isinstance(values, list) else type(values).__name__
            raise CalibrationError(f"{p}: {key} has {n} values for {rows}x{cols}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise CalibrationError(f"{p}: {key} data must be numbers")
        arr = np.asarray(values, dtype=np.float64).reshape(rows, cols)
        if shape is not None and arr.shape != shape:
            raise CalibrationError(f"{p}: {key} must be {shape[0]}x{shape[1]}, got {rows}x{cols}")
        return arr

    width, height = size("image_width"), size("image_height")
    K = matrix("camera_matrix", (3, 3))
    D = matrix("distortion_coefficients", None, required=False)
    R = matrix("rectification_matrix", (3, 3), required=False)
    P = matrix("projection_matrix", (3, 4), required=False)
    name = data.get("distortion_model") or "plumb_bob"
    try:
        model = DistortionModel(str(name))
    except ValueError:
        valid = ", ".join(m.value for m in DistortionModel)
        raise CalibrationError(f"{p}: unknown distortion_model {name!r} (known: {valid})") from None
    if P is not None and not P.any():
        P = None
    if rectified and P is None:
        raise CalibrationError(f"{p}: rectified images need projection_matrix (or pass the raw-image option)")
    try:
        return CameraModel(
            width=width,
            height=height,
            K=K,
            D=np.zeros(0) if D is None else D.reshape(-1),
            distortion_model=model,
            R=np.eye(3) if R is None else R,
            P=P,
            rectified=rectified,
        )
    except CalibrationError as exc:
        raise CalibrationError(f"{p}: {exc}") from None
