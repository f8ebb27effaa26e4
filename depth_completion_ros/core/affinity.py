"""RGB-guided CSPN affinities for the weight-free default completer.

Neighbour order (as in `core/propagation.py`): row-major 3×3 without the centre, as (dy, dx) times the
dilation: (-1,-1), (-1,0), (-1,1), (0,-1), (0,1), (1,-1), (1,0), (1,1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numba
import numpy as np

from .errors import ShapeError
from .lazy import lazy_module

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_module("torch", globals())
from .propagation import NEIGHBOUR_OFFSETS, PAIR_OFFSETS

__all__ = [
    "NEIGHBOUR_OFFSETS",
    "PairAffinity",
    "anchored_affinity",
    "anchored_pair_affinity",
    "colour_sigma",
    "rgb_affinity",
    "rgb_affinity_numpy",
]


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
    img = np.ascontiguousarray(_check_rgb(rgb))
    # The differences are integers in [0, 765]: the median is read off their histogram (no sort), in one pass.
    hist = _step_histogram(img)
    count = int(hist.sum())
    if count == 0:
        return 1.0
    med = int(np.searchsorted(np.cumsum(hist), count // 2, side="right"))  # sorted element count // 2
    return float(max(1.0, med))


@numba.njit(cache=True, nogil=True)
def _step_histogram(img: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Histogram (766 bins) of the L1 colour differences of horizontal and vertical neighbours of `img[::2, ::2]`
    (C-contiguous (H, W, 3) uint8).  Rows as flat bytes, differences into a buffer, then counted: LLVM vectorizes
    the differences (~2.5x faster than indexing pixels)."""
    h, w, _ = img.shape
    hist = np.zeros(_MAX_L1_STEP + 1, np.int64)
    steps = np.empty(w, np.int32)
    for y in range(0, h, 2):
        r = img[y].reshape(-1)
        n = (w - 1) // 2  # horizontal pairs (x, x + 2), x = 0, 2, ...
        for j in range(n):
            a = 6 * j
            steps[j] = (
                abs(np.int32(r[a]) - np.int32(r[a + 6]))
                + abs(np.int32(r[a + 1]) - np.int32(r[a + 7]))
                + abs(np.int32(r[a + 2]) - np.int32(r[a + 8]))
            )
        for j in range(n):
            hist[steps[j]] += 1
        if y + 2 < h:  # vertical pairs (y, y + 2)
            r2 = img[y + 2].reshape(-1)
            n = (w + 1) // 2
            for j in range(n):
                a = 6 * j
                steps[j] = (
                    abs(np.int32(r[a]) - np.int32(r2[a]))
                    + abs(np.int32(r[a + 1]) - np.int32(r2[a + 1]))
                    + abs(np.int32(r[a + 2]) - np.int32(r2[a + 2]))
                )
            for j in range(n):
                hist[steps[j]] += 1
    return hist


_MAX_L1_STEP = 3 * 255
"""Largest L1 difference of two uint8 RGB colours."""


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


@dataclass(frozen=True, kw_only=True)
class PairAffinity:
    """Symmetric colour affinities, one array per opposite neighbour pair, with the anchored normalization.

    Attributes:
        pairs: (4, H + 2d, W + 2d) float32, zero-padded by the dilation d: ``pairs[i, d + y, d + x]`` is the raw
            weight between pixel (y, x) and (y, x) + d·PAIR_OFFSETS[i] (0 where that neighbour is outside the image).
        inv_norm: (H, W) float32, ``1 / (Σ_k w_k + anchor)`` over the 8 neighbours.
        anchor: the normalization constant (> 0).
        dilation: d, pixels.
    """

    pairs: np.ndarray
    inv_norm: np.ndarray
    anchor: float
    dilation: int

    def expanded(self) -> tuple[np.ndarray, np.ndarray]:
        """((8, H, W) normalized affinities ``ŵ_k = w_k · inv_norm`` in `NEIGHBOUR_OFFSETS` order, (H, W) centre
        weight ``anchor · inv_norm = 1 − Σ_k ŵ_k``), float32, contiguous."""
        w = _expand(self.pairs, self.dilation, *self.inv_norm.shape)
        w *= self.inv_norm[None]
        return w, self.inv_norm * np.float32(self.anchor)


def anchored_pair_affinity(
    rgb: np.ndarray,
    *,
    anchor: float,
    sigma: float | None = None,
    sigma_scale: float = 2.0,
    dilation: int = 1,
) -> PairAffinity:
    """Colour-similarity affinities as 4 symmetric pair arrays, with the anchored normalization.

    `w(p, q) = exp(-(|I(p) - I(q)|_1 / s)^2)` for q = p + d·o_k, with `s = sigma_scale * sigma` on 0..255 RGB (0
    outside the image), tabulated in 256 steps of `|ΔI|_1 / s` over [0, 3.75] (weight error <= 0.0063).  The
    normalized CSPN weights are `ŵ_k = w_k / (Σ_k w_k + anchor)` and the weight of the initial depth is
    `anchor / (Σ_k w_k + anchor) = 1 - Σ_k ŵ_k`; `core.propagation.cspn_propagate_pairs` uses this form directly.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        anchor: normalization constant (> 0); larger keeps more of the initial depth.
        sigma: colour step (0..255 units); `colour_sigma(rgb)` when None.
        sigma_scale: multiplies sigma.
        dilation: neighbour distance in pixels (>= 1).

    Raises:
        ShapeError: `rgb` is not (H, W, 3) uint8.
        ValueError: anchor <= 0, dilation < 1 or sigma * sigma_scale <= 0.
    """
    if anchor <= 0:
        raise ValueError(f"anchor must be > 0, got {anchor}")
    img = _check_rgb(rgb)
    h, w, _ = img.shape
    d = int(dilation)
    pairs = _pair_weights(img, sigma, sigma_scale, d)
    den = np.full((h, w), np.float32(anchor), np.float32)
    for i, (dy, dx) in enumerate(PAIR_OFFSETS):
        oy, ox = dy * d, dx * d
        cv2.add(den, pairs[i, d : d + h, d : d + w], dst=den)  # w(p, p + o)
        cv2.add(den, pairs[i, d - oy : d - oy + h, d - ox : d - ox + w], dst=den)  # w(p, p - o) = w(p - o, p)
    return PairAffinity(pairs=pairs, inv_norm=np.reciprocal(den, out=den), anchor=float(anchor), dilation=d)


def anchored_affinity(
    rgb: np.ndarray,
    *,
    anchor: float,
    sigma: float | None = None,
    sigma_scale: float = 2.0,
    dilation: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """`anchored_pair_affinity(...).expanded()`: ((8, H, W) float32 normalized affinities `ŵ_k = w_k / (Σ_k w_k +
    anchor)` (non-negative, summing to < 1), (H, W) float32 centre weights `1 - Σ_k ŵ_k` in (0, 1]), for
    `core.propagation.cspn_propagate(..., normalized=True, center_weight=...)`."""
    return anchored_pair_affinity(
        rgb, anchor=anchor, sigma=sigma, sigma_scale=sigma_scale, dilation=dilation
    ).expanded()


def _pair_weights(img: np.ndarray, sigma: float | None, sigma_scale: float, d: int) -> np.ndarray:
    """(4, H + 2d, W + 2d) float32 raw pair weights, zero-padded (see `PairAffinity.pairs`)."""
    if d < 1:
        raise ValueError(f"dilation must be >= 1, got {d}")
    h, w, _ = img.shape
    s = (colour_sigma(img) if sigma is None else float(sigma)) * float(sigma_scale)
    if s <= 0:
        raise ValueError(f"sigma * sigma_scale must be > 0, got {s}")
    # |ΔI|_1 in table steps: OpenCV's uint8 differences, then the channel sum, the scale, the rounding (half to even,
    # as OpenCV's) and the table in one numba pass (bit-identical to the OpenCV chain, ~1.6x faster).
    to_index = np.float32(_KERNEL_STEPS / (_KERNEL_RANGE * s))
    out = np.empty((len(PAIR_OFFSETS), h + 2 * d, w + 2 * d), np.float32)
    for i, (dy, dx) in enumerate(PAIR_OFFSETS):
        oy, ox = dy * d, dx * d
        # p ranges over rows [0, h - oy), columns [x0, x1): its neighbour p + o lies inside the image.  Everything
        # else (the padding and the strips where p + o is outside) is zeroed, not the whole array first.
        y1, x0, x1 = max(0, h - oy), max(0, -ox), max(0, w - max(0, ox))
        x1 = max(x0, x1)
        out[i, :d] = 0.0
        out[i, d + y1 :] = 0.0
        out[i, d : d + y1, : d + x0] = 0.0
        out[i, d : d + y1, d + x1 :] = 0.0
        if y1 == 0 or x1 == x0:
            continue
        a = img[0:y1, x0:x1]
        b = img[oy : oy + y1, x0 + ox : x1 + ox]
        _tabulated(cv2.absdiff(a, b), to_index, _KERNEL_TABLE, out[i, d : d + y1, d + x0 : d + x1])
    return out


@numba.njit(cache=True, nogil=True)
def _tabulated(
    diff: np.ndarray, to_index: np.float32, table: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """out = table[min(round(Σ_c diff[..., c] · to_index), last)] for (h, w, 3) uint8 differences (rows of `out` may
    be strided).  (The row as flat bytes and the lookup in a loop of its own: LLVM vectorizes the index loop.)"""
    h, w, _ = diff.shape
    top = np.float32(len(table) - 1)
    index = np.empty(w, np.int32)
    for y in range(h):
        dy = diff[y].reshape(-1)
        for x in range(w):
            l1 = np.int32(dy[3 * x]) + np.int32(dy[3 * x + 1]) + np.int32(dy[3 * x + 2])
            index[x] = np.int32(np.rint(min(np.float32(l1) * to_index, top)))
        o = out[y]
        for x in range(w):
            o[x] = table[index[x]]


def _expand(pairs: np.ndarray, d: int, h: int, w: int) -> np.ndarray:
    """(8, H, W) float32 weights in `NEIGHBOUR_OFFSETS` order from pair arrays (see `PairAffinity.pairs`)."""
    out = np.empty((len(NEIGHBOUR_OFFSETS), h, w), np.float32)
    for i, (dy, dx) in enumerate(PAIR_OFFSETS):
        oy, ox = dy * d, dx * d
        out[NEIGHBOUR_OFFSETS.index((dy, dx))] = pairs[i, d : d + h, d : d + w]
        out[NEIGHBOUR_OFFSETS.index((-dy, -dx))] = pairs[i, d - oy : d - oy + h, d - ox : d - ox + w]
    return out


def _raw_affinity(rgb: np.ndarray, sigma: float | None, sigma_scale: float, dilation: int) -> np.ndarray:
    """(8, H, W) float32 raw colour affinities (see `anchored_pair_affinity`)."""
    img = _check_rgb(rgb)
    h, w, _ = img.shape
    return _expand(_pair_weights(img, sigma, sigma_scale, int(dilation)), int(dilation), h, w)


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
