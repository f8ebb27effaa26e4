"""Confidence maps in [0, 1] for completed depth (weight-free default, and networks without a confidence head).

Confidence is the product of three factors, each in (0, 1]:
distance to the nearest measurement (scaled by the measured spacing), relative depth variation around the
pixel (depth edges), and a disagreement term: for the default, between the propagated depth and the initial
fill (measured pixels get exactly 1); for a network (`network_confidence`), between its output and the sparse
input near the pixel.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from .errors import ShapeError

__all__ = [
    "combine_confidence",
    "default_confidence",
    "distance_confidence",
    "edge_confidence",
    "edge_window",
    "network_confidence",
]


def _f32(name: str, x: np.ndarray) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ShapeError(f"{name}: expected shape (H, W), got {a.shape}")
    if a.size == 0:
        raise ShapeError(f"{name}: empty image {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def distance_confidence(measured: np.ndarray, spacing: float) -> np.ndarray:
    """exp(-dist / spacing): dist = Euclidean pixel distance to the nearest measured pixel.

    Args:
        measured: (H, W) bool, True at measured pixels.
        spacing: typical measurement spacing, pixels (> 0).

    Returns:
        (H, W) float32 in (0, 1], 1 at measured pixels.
    """
    m = np.asarray(measured, dtype=bool)
    if m.ndim != 2 or m.size == 0:
        raise ShapeError(f"measured: expected a non-empty (H, W) array, got shape {m.shape}")
    if not spacing > 0:  # also NaN
        raise ValueError(f"spacing must be > 0, got {spacing}")
    if not m.any():
        return np.zeros(m.shape, np.float32)
    dist = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.exp(-dist / np.float32(spacing)).astype(np.float32)


_EDGE_SCALE = 0.05
"""Relative depth range in the window that gives the edge factor 1/e (default completer)."""


def edge_window(spacing: float) -> int:
    """Odd box size (pixels, >= 3) of the default confidence's edge factor: about the measurement spacing."""
    return int(max(3, 2 * round(spacing / 2) + 1))


def edge_confidence(depth: np.ndarray, *, window: int = 5, scale: float = _EDGE_SCALE) -> np.ndarray:
    """exp(-r / scale) with r = (local max - local min) / local max of depth in a `window`² box.

    Args:
        depth: (H, W) float32 metres (> 0 where defined).
        window: odd box size in pixels.
        scale: relative depth range giving confidence 1/e.

    Returns:
        (H, W) float32 in (0, 1].
    """
    d = _f32("depth", depth)
    k = np.ones((window, window), np.uint8)
    hi = cv2.dilate(d, k)
    lo = cv2.erode(d, k)
    r = (hi - lo) / np.maximum(hi, np.float32(1e-6))
    return np.exp(-r / np.float32(scale)).astype(np.float32)


def combine_confidence(*factors: np.ndarray, measured: np.ndarray | None = None) -> np.ndarray:
    """Product of (H, W) factors in [0, 1], clipped to [0, 1]; 1 where `measured` (H, W) bool is True."""
    if not factors:
        raise ValueError("need at least one factor")
    out = np.ones(np.asarray(factors[0]).shape, np.float32)
    for f in factors:
        out *= _f32("factor", f)
    np.clip(out, 0.0, 1.0, out=out)
    if measured is not None:
        out[np.asarray(measured, dtype=bool)] = 1.0
    return out


def default_confidence(
    depth: np.ndarray,
    initial: np.ndarray,
    measured: np.ndarray,
    spacing: float,
    *,
    disagreement_scale: float = 0.05,
    distance: np.ndarray | None = None,
) -> np.ndarray:
    """Confidence of the default completer.

    Args:
        depth: (H, W) float32 metres, the final completed depth.
        initial: (H, W) float32 metres, the initial (classical) fill before propagation.
        measured: (H, W) bool, measurements kept fixed.
        spacing: typical measurement spacing, pixels.
        disagreement_scale: relative |depth - initial| giving a factor 1/e.
        distance: optional precomputed (H, W) float32 pixel distance to the nearest measurement.

    Returns:
        (H, W) float32 in [0, 1], 1 at measured pixels: `distance_confidence(measured, spacing)` ×
        `edge_confidence(depth, window=spacing-sized)` × exp(-|depth − initial| / depth / disagreement_scale).
    """
    d = _f32("depth", depth)
    i0 = _f32("initial", initial)
    if d.shape != i0.shape:
        raise ShapeError(f"depth {d.shape} and initial {i0.shape} differ")
    m = np.asarray(measured, dtype=bool)
    if m.shape != d.shape:
        raise ShapeError(f"measured {m.shape} and depth {d.shape} differ")
    if spacing <= 0:
        raise ValueError(f"spacing must be > 0, got {spacing}")
    if distance is None:
        if not m.any():
            return np.zeros(d.shape, np.float32)
        dist = cv2.distanceTransform((~m).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    else:
        dist = _f32("distance", distance)
    # The product of the three factors as one exp of the summed exponents: OpenCV's box max / min, one fused pass for
    # the exponent (0 at measured pixels: exactly 1 there), OpenCV's exp.
    window = edge_window(spacing)
    kernel = np.ones((window, window), np.uint8)
    out = np.empty_like(d)
    _exponent(
        d,
        i0,
        cv2.dilate(d, kernel),
        cv2.erode(d, kernel),
        dist,
        np.ascontiguousarray(m).view(np.uint8),
        np.float32(1.0 / _EDGE_SCALE),
        np.float32(1.0 / disagreement_scale),
        np.float32(1.0 / spacing),
        out,
    )
    return cv2.exp(out, dst=out)  # every term is <= 0 (the min only guards odd inputs): out in [0, 1]


@numba.njit(cache=True, nogil=True)
def _exponent(
    d: np.ndarray,
    i0: np.ndarray,
    hi: np.ndarray,
    lo: np.ndarray,
    dist: np.ndarray,
    measured: np.ndarray,
    edge_rate: np.float32,
    disagreement_rate: np.float32,
    distance_rate: np.float32,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """out = min(0, -edge_rate·(hi - lo)/hi - disagreement_rate·|d - i0|/d - distance_rate·dist), 0 where measured."""
    h, w = d.shape
    tiny = np.float32(1e-6)
    zero = np.float32(0.0)
    for y in range(h):
        for x in range(w):
            e = (hi[y, x] - lo[y, x]) / max(hi[y, x], tiny)
            r = abs(d[y, x] - i0[y, x]) / max(d[y, x], tiny)
            v = -(edge_rate * e + disagreement_rate * r + distance_rate * dist[y, x])
            out[y, x] = zero if measured[y, x] else min(v, zero)


def network_confidence(
    depth: np.ndarray, sparse: np.ndarray, spacing: float, *, disagreement_scale: float = 0.05
) -> np.ndarray:
    """Confidence for a network without a confidence head (PENet, ENet, the CSPN NYU model).

    A heuristic built from the default's factors, meant to rank errors (higher = smaller expected error), not a
    calibrated probability: exp(-dist / spacing) × edge factor of `depth` × exp(-r / disagreement_scale), where
    r is the largest relative disagreement |depth − sparse| / sparse among the measurements in a box of about
    the measurement spacing around the pixel (0 where there is none).  Measured pixels are not set to 1: a net
    that does not reproduce its input there gets the disagreement it shows.  Measured only on stand-in outputs
    (`benchmarks/bench_completion.py --confidence-only`: the default's depth, IP-Basic, nearest fill and a small
    `cspn` trained 5 CPU-minutes on synthetic scenes, on the shared KITTI frame at 64 / 32 / 16 beams): AUSE 0.23–0.54
    of a random ranking's, RMSE of the most confident half 0.21–0.62 of the whole.  Those outputs (almost)
    reproduce their input, so the disagreement factor was exercised on synthetic cases only; how well the heuristic
    ranks the errors of the released weights is not measured.

    Args:
        depth: (H, W) float32 metres, the network's output (> 0).
        sparse: (H, W) float32 metres, the sparse input (0 = missing).
        spacing: typical measurement spacing, pixels (`fill.sparse_stats(sparse).spacing`).
        disagreement_scale: relative disagreement giving a factor 1/e.

    Returns:
        (H, W) float32 in [0, 1].
    """
    d = _f32("depth", depth)
    s = _f32("sparse", sparse)
    if d.shape != s.shape:
        raise ShapeError(f"depth {d.shape} and sparse {s.shape} differ")
    if spacing <= 0:
        raise ValueError(f"spacing must be > 0, got {spacing}")
    m = s > 0
    if not m.any():
        return np.zeros(d.shape, np.float32)
    dist = cv2.distanceTransform((~m).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    window = edge_window(spacing)
    kernel = np.ones((window, window), np.uint8)
    hi = cv2.dilate(d, kernel)
    edge = cv2.divide(cv2.subtract(hi, cv2.erode(d, kernel)), cv2.max(hi, 1e-6))
    residual = np.zeros_like(d)
    residual[m] = np.abs(d[m] - s[m]) / s[m]
    near = cv2.dilate(residual, kernel)  # the worst disagreement among the measurements around the pixel
    exponent = cv2.addWeighted(edge, -1.0 / _EDGE_SCALE, near, -1.0 / disagreement_scale, 0.0)
    exponent = cv2.scaleAdd(dist, -1.0 / spacing, exponent)
    return cv2.exp(cv2.min(exponent, 0.0))
