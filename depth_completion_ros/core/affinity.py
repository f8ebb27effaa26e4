"""RGB-guided CSPN affinities for the weight-free default completer.

Neighbour order (as in `core/propagation.py`): row-major 3×3 without the centre, as (dy, dx) times the
dilation: (-1,-1), (-1,0), (-1,1), (0,-1), (0,1), (1,-1), (1,0), (1,1).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .errors import ShapeError

__all__ = ["NEIGHBOUR_OFFSETS", "anchored_affinity", "colour_sigma", "rgb_affinity", "rgb_affinity_numpy"]

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
    sub = _every_other_pixel(img).astype(np.float32)
    ones = np.ones((1, 3))
    parts = [
        cv2.transform(cv2.absdiff(a, b), ones).ravel()
        for a, b in ((sub[:, 1:], sub[:, :-1]), (sub[1:], sub[:-1]))
        if a.size  # an image one (subsampled) pixel wide or high has no pairs along that axis
    ]
    diffs = np.concatenate(parts) if parts else np.empty(0, np.float32)
    if diffs.size == 0:
        return 1.0
    med = float(np.partition(diffs, diffs.size // 2)[diffs.size // 2])
    return float(max(1.0, med))


def _every_other_pixel(img: np.ndarray) -> np.ndarray:
    """`img[::2, ::2]` as a contiguous copy (OpenCV's exact 2x nearest downscale: ~6x faster than numpy's strided
    copy of 3-byte pixels at 1242x375), odd last rows / columns appended."""
    h, w = img.shape[:2]
    he, we = h - h % 2, w - w % 2
    if he and we:
        sub = cv2.resize(img[:he, :we], (we // 2, he // 2), interpolation=cv2.INTER_NEAREST)
    else:
        sub = img[:he:2, :we:2]
    if h % 2:
        sub = np.concatenate([sub, img[h - 1 : h, :we:2]], axis=0)
    if w % 2:
        sub = np.concatenate([sub, img[::2, w - 1 : w]], axis=1)
    return sub


_FORWARD = ((0, 1), (1, 0), (1, 1), (1, -1))
"""One offset of each symmetric neighbour pair; the opposite channel gets the same weight, shifted."""

_KERNEL_RANGE = 3.75
"""The colour kernel exp(-x^2) is tabulated on x in [0, _KERNEL_RANGE]; beyond it the weight is < 1e-6 (set to 0)."""

_KERNEL_STEPS = 255
"""Tabulation steps (a uint8 index): the weight error is at most ~0.0063 (half a step times max |d/dx exp(-x^2)|)."""


def _kernel_table() -> np.ndarray:
    x = np.arange(_KERNEL_STEPS + 1, dtype=np.float64) * (_KERNEL_RANGE / _KERNEL_STEPS)
    table = np.exp(-(x**2)).astype(np.float32)
    table[-1] = 0.0  # the saturated index stands for every x >= _KERNEL_RANGE
    return table


_KERNEL_TABLE = _kernel_table()


def anchored_affinity(
    rgb: np.ndarray,
    *,
    anchor: float,
    sigma: float | None = None,
    sigma_scale: float = 2.0,
    dilation: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Colour-similarity affinities normalized with an anchor, and the matching centre weight.

    `w_k(p) = exp(-(|I(p) - I(p + d·o_k)|_1 / s)^2)` with `s = sigma_scale * sigma` on 0..255 RGB (0 outside the
    image), tabulated in 256 steps of `|ΔI|_1 / s` over [0, 3.75] (weight error <= 0.0063).  Returns
    `ŵ_k = w_k / (Σ_k w_k + anchor)` (non-negative, summing to < 1) and the centre weight
    `anchor / (Σ_k w_k + anchor) = 1 - Σ_k ŵ_k`: the reference weight of the initial depth in a normalized
    CSPN step.  Only the 4 unique neighbour differences are computed (pairs are symmetric).

    Args:
        rgb: (H, W, 3) uint8 RGB.
        anchor: normalization constant (> 0); larger keeps more of the initial depth.
        sigma: colour step (0..255 units); `colour_sigma(rgb)` when None.
        sigma_scale: multiplies sigma.
        dilation: neighbour distance in pixels (>= 1).

    Returns:
        ((8, H, W) float32 normalized affinities, (H, W) float32 centre weights in (0, 1]), both contiguous.
    """
    if anchor <= 0:
        raise ValueError(f"anchor must be > 0, got {anchor}")
    out = _raw_affinity(rgb, sigma, sigma_scale, dilation)
    den = out.sum(axis=0)
    den += np.float32(anchor)
    np.divide(out, den[None], out=out)
    centre = np.divide(np.float32(anchor), den, out=den)
    return out, centre


def _raw_affinity(rgb: np.ndarray, sigma: float | None, sigma_scale: float, dilation: int) -> np.ndarray:
    """(8, H, W) float32 raw colour affinities (see `anchored_affinity`)."""
    img = _check_rgb(rgb)
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    h, w, _ = img.shape
    s = (colour_sigma(img) if sigma is None else float(sigma)) * float(sigma_scale)
    if s <= 0:
        raise ValueError(f"sigma * sigma_scale must be > 0, got {s}")
    # |ΔI|_1 in table steps: uint8 differences, then the channel sum and the scale in one float transform and a
    # saturating uint8 cast.
    to_index = np.full((1, 3), _KERNEL_STEPS / (_KERNEL_RANGE * s))
    # Every channel is written where its neighbour lies inside the image; only the strips outside are zeroed
    # (zero-filling all 8 channels first would be one more pass over 8·H·W floats).
    out = np.empty((8, h, w), np.float32)
    d = dilation
    for k, (ky, kx) in enumerate(NEIGHBOUR_OFFSETS):
        oy, ox = ky * d, kx * d
        out[k, : max(0, -oy)] = 0.0
        out[k, max(0, h - oy) :] = 0.0
        out[k, :, : max(0, -ox)] = 0.0
        out[k, :, max(0, w - ox) :] = 0.0
    for dy, dx in _FORWARD:
        oy, ox = dy * d, dx * d
        if oy >= h or abs(ox) >= w:
            continue
        # p ranges over rows [0, h-oy), columns [x0, x1); its neighbour p + o lies inside the image.
        x0, x1 = max(0, -ox), w - max(0, ox)
        a = img[0 : h - oy, x0:x1]
        b = img[oy:h, x0 + ox : x1 + ox]
        index = cv2.convertScaleAbs(cv2.transform(cv2.absdiff(a, b).astype(np.float32), to_index))
        e = cv2.LUT(index, _KERNEL_TABLE)
        out[NEIGHBOUR_OFFSETS.index((dy, dx)), 0 : h - oy, x0:x1] = e
        out[NEIGHBOUR_OFFSETS.index((-dy, -dx)), oy:h, x0 + ox : x1 + ox] = e
    return out


def rgb_affinity_numpy(
    rgb: np.ndarray,
    *,
    sigma: float | None = None,
    sigma_scale: float = 2.0,
    dilation: int = 1,
    anchor: float | None = None,
) -> np.ndarray:
    """Affinities from colour similarity, as a contiguous (8, H, W) float32 numpy array; see `rgb_affinity`."""
    if anchor is not None:
        return anchored_affinity(rgb, anchor=anchor, sigma=sigma, sigma_scale=sigma_scale, dilation=dilation)[0]
    return _raw_affinity(rgb, sigma, sigma_scale, dilation)


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
    difference on 0..255 RGB (tabulated: weight error <= 0.0063); neighbours outside the image get weight 0.
    Strong RGB edges thus block the
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
