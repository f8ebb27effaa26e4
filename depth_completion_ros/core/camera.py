"""The one camera model of the package (pinhole + distortion, as sensor_msgs/CameraInfo describes it).

Frames: points are in the camera optical frame (REP 103: x right, y down, z forward), metres.
Pixels are (u, v) = (column, row), with the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

__all__ = ["CameraModel", "DistortionModel"]


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
