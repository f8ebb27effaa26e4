"""Colourized previews of depth and confidence (for PNGs, rviz `depth_color`, evaluation panels)."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["colorize_confidence", "colorize_depth"]


def colorize_depth(depth: np.ndarray, min_depth: float | None = None, max_depth: float | None = None) -> np.ndarray:
    """(H, W) metres (0/NaN = none) -> (H, W, 3) uint8 RGB, near = warm, far = cool, none = black.

    Colours follow inverse depth between `min_depth` and `max_depth` (defaults: 2nd/98th percentile
    of the valid depths), so near structure keeps contrast.
    """
    d = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    out = np.zeros((*d.shape, 3), dtype=np.uint8)
    if not valid.any():
        return out
    vals = d[valid]
    lo = float(min_depth) if min_depth is not None else float(np.percentile(vals, 2))
    hi = float(max_depth) if max_depth is not None else float(np.percentile(vals, 98))
    lo = max(lo, 1e-3)
    hi = max(hi, lo * 1.001)
    inv = (1.0 / np.clip(d, lo, hi) - 1.0 / hi) / (1.0 / lo - 1.0 / hi)
    u8 = np.clip(inv * 255.0, 0, 255).astype(np.uint8)
    rgb = cv2.applyColorMap(u8, cv2.COLORMAP_TURBO)[..., ::-1]
    out[valid] = rgb[valid]
    return out


def colorize_confidence(confidence: np.ndarray) -> np.ndarray:
    """(H, W) confidence in [0, 1] -> (H, W, 3) uint8 RGB (viridis-like; NaN = black)."""
    c = np.nan_to_num(np.asarray(confidence, dtype=np.float32), nan=0.0)
    u8 = np.clip(c * 255.0, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(u8, cv2.COLORMAP_VIRIDIS)[..., ::-1])
