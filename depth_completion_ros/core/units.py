"""Depth units and scale factors, in one place.

Core convention: depth is float32 metres along the camera optical axis (z, camera optical frame,
REP 103), 0 = no measurement.  NaN appears only in float32 ROS output (REP 118).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "KITTI_PNG_SCALE",
    "MM_PER_M",
    "TUM_PNG_SCALE",
    "depth_to_rep118",
    "kitti_png_to_metres",
    "metres_to_kitti_png",
    "metres_to_millimetres_u16",
    "millimetres_to_metres",
    "rep118_to_depth",
]

KITTI_PNG_SCALE = 256.0
"""KITTI depth PNGs: uint16, metres = value / 256, 0 = no data."""
TUM_PNG_SCALE = 5000.0
"""TUM RGB-D depth PNGs: uint16, metres = value / 5000, 0 = no data."""
MM_PER_M = 1000.0
"""16UC1 depth images (REP 118): uint16 millimetres, 0 = no data."""


def kitti_png_to_metres(png: np.ndarray, scale: float = KITTI_PNG_SCALE) -> np.ndarray:
    """uint16 depth PNG values -> float32 metres (0 stays 0)."""
    return png.astype(np.float32) / np.float32(scale)


def metres_to_kitti_png(depth: np.ndarray, scale: float = KITTI_PNG_SCALE) -> np.ndarray:
    """float metres -> uint16 PNG values; NaN, inf and <= 0 become 0, values clip at 65535."""
    d = np.nan_to_num(np.asarray(depth, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.rint(d * scale), 0, 65535).astype(np.uint16)


def millimetres_to_metres(depth_mm: np.ndarray) -> np.ndarray:
    """16UC1 millimetres -> float32 metres (0 stays 0)."""
    return depth_mm.astype(np.float32) / np.float32(MM_PER_M)


def metres_to_millimetres_u16(depth: np.ndarray) -> np.ndarray:
    """float metres -> uint16 millimetres (16UC1); invalid -> 0."""
    return metres_to_kitti_png(depth, MM_PER_M)


def depth_to_rep118(depth: np.ndarray) -> np.ndarray:
    """Core depth (0 = missing) -> REP 118 float32 (NaN = missing; inf and negatives also become NaN)."""
    d = np.asarray(depth, dtype=np.float32)
    # np.where avoids a slow boolean-mask scatter; the comparisons are False for NaN.
    return np.where((d > 0) & (d < np.inf), d, np.float32(np.nan)).astype(np.float32, copy=False)


def rep118_to_depth(depth: np.ndarray) -> np.ndarray:
    """REP 118 float32 (NaN/inf/<=0 = missing) -> core depth (0 = missing), float32."""
    d = np.asarray(depth, dtype=np.float32)
    # fmax drops NaN and negatives (NaN vs 0 -> 0); +inf is the one remaining invalid value.
    out = np.fmax(d, np.float32(0.0))
    out[out == np.inf] = 0.0
    return out
