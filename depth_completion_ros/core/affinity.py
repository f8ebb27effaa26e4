"""RGB-guided CSPN affinities for the weight-free default completer.

Neighbour order (as in `core/propagation.py`): row-major 3×3 without the centre, as (dy, dx) times the
dilation: (-1,-1), (-1,0), (-1,1), (0,-1), (0,1), (1,-1), (1,0), (1,1).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .errors import ShapeError

__all__ = ["NEIGHBOUR_OFFSETS", "colour_sigma", "rgb_affinity", "rgb_affinity_numpy"]

NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
"""(dy, dx) of the 8 affinity channels, in channel order."""


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ShapeError(f"rgb: expected shape (H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ShapeError(f"rgb: expected dtype uint8, got {arr.dtype}")
    return arr


def colour_sigma(rgb: np.ndarray) -> float:
    """Typical colour step between horizontal/vertical neighbours of `rgb` ((H, W, 3) uint8), in 0..255 units.

    The (upper) median L1 colour difference of horizontal and vertical neighbours (on a 2× subsample), floored at
    1; scales the affinity kernel to the image's contrast and noise instead of a constant for one camera.
    """
    img = _check_rgb(rgb)
    sub = img[::2, ::2].astype(np.float32)
    ones = np.ones((1, 3))
    parts = [
        cv2.transform(cv2.absdiff(a, b), ones).ravel() for a, b in ((sub[:, 1:], sub[:, :-1]), (sub[1:], sub[:-1]))
    ]
    diffs = np.concatenate(parts)
    if diffs.size == 0:
        return 1.0
    med = float(np.partition(diffs, diffs.size // 2)[diffs.size // 2])
    return float(max(1.0, med))


_FORWARD = ((0, 1), (1, 0), (1, 1), (1, -1))
"""One offset of each symmetric neighbour pair; the opposite channel gets the same weight, shifted."""


def rgb_affinity_numpy(
    rgb: np.ndarray,
    *,
    sigma: float | None = None,
    sigma_scale: float = 2.0,
    dilation: int = 1,
    anchor: float | None = None,
) -> np.ndarray:
    """Affinities from colour similarity, as a contiguous numpy array; see `rgb_affinity`.

    `w_k(p) = exp(-(|I(p) - I(p + d·o_k)|_1 / s)^2)`, `s = sigma_scale * sigma`, 0 outside the image.
    Only the 4 unique neighbour differences are computed (pairs are symmetric).  With `anchor` given,
    returns `w / (sum_k w + anchor)` (non-negative, summing to < 1: ready for a normalized CSPN with
    reference weight `anchor / (sum_k w + anchor)` on the initial depth).

    Args:
        rgb: (H, W, 3) uint8 RGB.
        sigma: colour step (0..255 units); `colour_sigma(rgb)` when None.
        sigma_scale: multiplies sigma.
        dilation: neighbour distance in pixels (>= 1).
        anchor: optional normalization constant (> 0).

    Returns:
        (8, H, W) float32.
    """
    img = _check_rgb(rgb)
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    if anchor is not None and anchor <= 0:
        raise ValueError(f"anchor must be > 0, got {anchor}")
    h, w, _ = img.shape
    s = (colour_sigma(img) if sigma is None else float(sigma)) * float(sigma_scale)
    if s <= 0:
        raise ValueError(f"sigma * sigma_scale must be > 0, got {s}")
    f = img.astype(np.float32)
    m = np.full((1, 3), 1.0 / s)
    out = np.zeros((8, h, w), np.float32)
    d = dilation
    for dy, dx in _FORWARD:
        oy, ox = dy * d, dx * d
        if oy >= h or abs(ox) >= w:
            continue
        # p ranges over rows [0, h-oy), columns [x0, x1); its neighbour p + o lies inside the image.
        x0, x1 = max(0, -ox), w - max(0, ox)
        a = f[0 : h - oy, x0:x1]
        b = f[oy:h, x0 + ox : x1 + ox]
        z = cv2.transform(cv2.absdiff(a, b), m)
        e = cv2.exp(-cv2.multiply(z, z))
        k_fwd = NEIGHBOUR_OFFSETS.index((dy, dx))
        k_bwd = NEIGHBOUR_OFFSETS.index((-dy, -dx))
        out[k_fwd, 0 : h - oy, x0:x1] = e
        out[k_bwd, oy:h, x0 + ox : x1 + ox] = e
    if anchor is not None:
        den = out.sum(axis=0)
        den += np.float32(anchor)
        np.divide(out, den[None], out=out)
    return out


def rgb_affinity(
    rgb: np.ndarray,
    *,
    sigma: float | None = None,
    sigma_scale: float = 2.0,
    dilation: int = 1,
    anchor: float | None = None,
) -> torch.Tensor:
    """Raw (non-negative) affinities from colour similarity between each pixel and its 8 neighbours.

    `w_k(p) = exp(-(|I(p) - I(p + o_k)|_1 / s)^2)` with `s = sigma_scale * sigma`, and the L1 colour
    difference on 0..255 RGB; neighbours outside the image get weight 0.  Strong RGB edges thus block the
    propagation and uniform regions pass it on.  With `anchor`, normalized as `w / (sum_k w + anchor)`.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        sigma: colour step (0..255 units); `colour_sigma(rgb)` when None.
        sigma_scale: multiplies sigma.
        dilation: neighbour distance in pixels (>= 1).
        anchor: optional normalization constant (> 0).

    Returns:
        (1, 8, H, W) float32 tensor in [0, 1] on the CPU, contiguous.
    """
    arr = rgb_affinity_numpy(rgb, sigma=sigma, sigma_scale=sigma_scale, dilation=dilation, anchor=anchor)
    return torch.from_numpy(arr)[None]
