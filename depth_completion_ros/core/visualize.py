"""Colourized previews of depth and confidence (for PNGs, rviz `depth_color`, evaluation panels)."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["colorize_confidence", "colorize_depth"]


def _depth_colormap() -> np.ndarray:
    """(256, 1, 3) uint8 RGB lookup table for `cv2.applyColorMap`: 0 = black (no depth), 1..255 = turbo from far
    (blue) to near (red)."""
    turbo = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)  # (256, 1, 3) BGR
    table = np.zeros((256, 1, 3), np.uint8)
    table[1:] = turbo[np.linspace(0, 255, 255).round().astype(int), :, ::-1]
    return table


_DEPTH_COLORMAP = _depth_colormap()

_RANGE_SUBSAMPLE = 4
"""The default colour range (percentiles of the valid depths) is read on every 4th row and column."""


def colorize_depth(depth: np.ndarray, min_depth: float | None = None, max_depth: float | None = None) -> np.ndarray:
    """(H, W) metres (0/NaN = none) -> (H, W, 3) uint8 RGB, near = warm, far = cool, none = black.

    Colours follow inverse depth between `min_depth` and `max_depth` (defaults: 2nd/98th percentile of the valid
    depths, on a 4× subsample), so near structure keeps contrast.  ~2 ms at 1242×375 (OpenCV arithmetic and one
    lookup table with black for "none"; no masked copies).
    """
    d = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if min_depth is None or max_depth is None:
        sample = d[::_RANGE_SUBSAMPLE, ::_RANGE_SUBSAMPLE]
        sample = sample[sample > 0]
        if sample.size == 0:
            sample = d[d > 0]
        if sample.size == 0:
            return np.zeros((*d.shape, 3), dtype=np.uint8)
        p_lo, p_hi = np.percentile(sample, [2, 98])
    lo = max(float(min_depth) if min_depth is not None else float(p_lo), 1e-3)
    hi = max(float(max_depth) if max_depth is not None else float(p_hi), lo * 1.001)
    # Index 1 + 254 * (1/d - 1/hi) / (1/lo - 1/hi) on [lo, hi] (clipped), 0 where there is no depth.
    scale = 254.0 / (1.0 / lo - 1.0 / hi)
    inv = cv2.divide(1.0, np.clip(d, np.float32(lo), np.float32(hi)))
    index = cv2.convertScaleAbs(inv, alpha=scale, beta=1.0 - scale / hi)
    index[d <= 0] = 0
    return cv2.applyColorMap(index, _DEPTH_COLORMAP)


def colorize_confidence(confidence: np.ndarray) -> np.ndarray:
    """(H, W) confidence in [0, 1] -> (H, W, 3) uint8 RGB (viridis-like; NaN = black)."""
    c = np.nan_to_num(np.asarray(confidence, dtype=np.float32), nan=0.0)
    if c.size == 0:  # OpenCV's colour map divides by the size (SIGFPE on an empty image)
        return np.zeros((*c.shape, 3), np.uint8)
    u8 = np.clip(c * 255.0, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(u8, cv2.COLORMAP_VIRIDIS)[..., ::-1])
