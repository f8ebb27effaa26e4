"""Classical (weight-free) depth fills: the IP-Basic baseline, nearest-neighbour fill and the default's fill.

All functions take and return `(H, W)` float32 depth in metres along the optical axis, 0 = missing.
Morphology runs in *inverted* depth (`ref - d`), so a max-filter (dilation) prefers the nearer surface, as
in IP-Basic (Ku, Harakeh, Waslander, "In Defense of Classical Image Processing", CRV 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numba
import numpy as np

from .errors import DataError, ShapeError

__all__ = [
    "OUTLIER_TOLERANCE",
    "FillResult",
    "SparseStats",
    "classical_fill",
    "classical_fill_detailed",
    "ip_basic_fill",
    "nearest_fill",
    "reject_outliers",
    "sparse_stats",
]

_EPS_M = 0.1
"""IP-Basic's validity threshold on (inverted) depth, metres."""

OUTLIER_TOLERANCE = 0.25
"""Default relative depth excess over the local near surface that marks a measurement as seen through a foreground
object (LiDAR–camera parallax).  0.2–0.3 gave the lowest RMSE and MAE on every KITTI density (64/32/16 beams) and
the TUM cases of `benchmarks/bench_completion.py`; 0.1 dropped valid background points at depth edges."""


@numba.njit(cache=True, nogil=True)
def _nonfinite(a: np.ndarray) -> bool:  # pragma: no cover - compiled
    """Whether (H, W) float32 `a` holds a NaN or ±inf (an integer count: vectorized, ~4x OpenCV's checkRange)."""
    bad = 0
    for y in range(a.shape[0]):
        r = a[y]
        for x in range(r.shape[0]):
            bad += r[x] - r[x] != 0  # NaN and ±inf (inf - inf is NaN)
    return bad > 0


def _finite(depth: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(depth), depth, np.float32(0.0))


def _check_depth(name: str, depth: np.ndarray, *, finite: bool = True) -> np.ndarray:
    """`depth` as a contiguous (H, W) float32 array, NaN / ±inf set to 0 (`finite=False`: the caller checks that)."""
    arr = np.asarray(depth)
    if arr.ndim != 2:
        raise ShapeError(f"{name}: expected shape (H, W), got {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ShapeError(f"{name}: empty image {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ShapeError(f"{name}: expected float metres, got dtype {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if finite and _nonfinite(out):
        out = _finite(out)
    return out


def _cross(n: int) -> np.ndarray:
    k = np.zeros((n, n), np.uint8)
    k[n // 2, :] = 1
    k[:, n // 2] = 1
    return k


def _diamond(n: int) -> np.ndarray:
    """n×n diamond (|dy| + |dx| <= n // 2), uint8."""
    r = n // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (np.abs(yy) + np.abs(xx) <= r).astype(np.uint8)


def _full(n: int) -> np.ndarray:
    return np.ones((n, n), np.uint8)


def ip_basic_fill(
    sparse: np.ndarray,
    *,
    max_depth: float = 100.0,
    extrapolate: bool = True,
    blur: str = "gaussian",
) -> np.ndarray:
    """IP-Basic `fill_in_fast` (Ku et al., CRV 2018) with its published defaults; the benchmark baseline.

    Steps (from the paper): invert (`max_depth - d`), dilate with a 5×5 diamond, close small holes with a
    full 5×5 kernel, fill remaining holes from a 7×7 dilation, optionally extend the top measurement of each
    column to the top of the image and fill large holes from a 31×31 dilation, 5×5 median blur, 5×5
    gaussian (or bilateral) blur of the valid pixels, re-invert.

    Args:
        sparse: (H, W) float32 metres, 0 = missing.
        max_depth: inversion reference, metres (the published 100 m; deeper points become invalid).
        extrapolate: extend to the image top and fill large holes (published default: True).
        blur: "gaussian" (published default), "bilateral" or "none".

    Returns:
        (H, W) float32 metres, 0 where nothing could be filled.
    """
    depth = _check_depth("sparse", sparse).copy()
    if blur not in ("gaussian", "bilateral", "none"):
        raise ValueError(f"blur must be 'gaussian', 'bilateral' or 'none', got {blur!r}")
    valid = depth > _EPS_M
    depth[valid] = np.float32(max_depth) - depth[valid]
    depth[~valid] = 0.0

    depth = cv2.dilate(depth, _diamond(5))
    depth = cv2.morphologyEx(depth, cv2.MORPH_CLOSE, _full(5))
    empty = depth < _EPS_M
    dilated = cv2.dilate(depth, _full(7))
    depth[empty] = dilated[empty]

    if extrapolate:
        h = depth.shape[0]
        has = depth > _EPS_M
        top = np.where(has.any(axis=0), has.argmax(axis=0), h)
        cols = np.nonzero(top < h)[0]
        top_val = depth[top[cols], cols]
        rows = np.arange(h)[:, None]
        above = rows < top[None, :]
        depth = np.where(above, np.broadcast_to(_scatter_row(top_val, cols, depth.shape[1]), depth.shape), depth)
        empty = depth < _EPS_M
        dilated = cv2.dilate(depth, _full(31))
        depth[empty] = dilated[empty]

    depth = cv2.medianBlur(np.ascontiguousarray(depth, dtype=np.float32), 5)
    if blur == "gaussian":
        valid = depth > _EPS_M
        blurred = cv2.GaussianBlur(depth, (5, 5), 0)
        depth[valid] = blurred[valid]
    elif blur == "bilateral":
        depth = cv2.bilateralFilter(depth, 5, 1.5, 2.0)

    valid = depth > _EPS_M
    depth[valid] = np.float32(max_depth) - depth[valid]
    depth[~valid] = 0.0
    return depth.astype(np.float32, copy=False)


def _scatter_row(values: np.ndarray, cols: np.ndarray, width: int) -> np.ndarray:
    row = np.zeros((1, width), np.float32)
    row[0, cols] = values
    return row


def nearest_fill(sparse: np.ndarray) -> np.ndarray:
    """Nearest-measurement fill (Euclidean, cv2 distance transform with labels).

    Args:
        sparse: (H, W) float32 metres, 0 = missing.

    Returns:
        (H, W) float32 metres: every pixel takes the depth of its nearest measured pixel.

    Raises:
        DataError: if `sparse` has no measurement.
    """
    return _nearest(_check_depth("sparse", sparse))[0]


def _nearest_exact(
    depth: np.ndarray, spacing: float | None = None, out: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(nearest fill, Euclidean distance in pixels to the nearest measurement) of a checked float32 map, exact.

    The nearest measurement of a pixel minimizes the squared distance dy² + dx²; ties go to the smaller column, then
    the smaller row (so the result does not depend on the scan).  Separable (Felzenszwalb & Huttenlocher 2012): the
    nearest measurement in each column, then per row the lower envelope of the parabolas (x - x')² + dy(x')², in
    integers; with a measurement `spacing` (pixels) up to `_WINDOW_MAX_SPACING`, a window search first.  ~1.2x
    (envelope) to ~2x (window) faster than OpenCV's labelled distance transform (a 5×5 chamfer approximation) on the
    KITTI frames at 1242×375.
    """
    if not (depth > 0).any():
        raise DataError("sparse depth has no valid measurement")
    fill, dist = (np.empty_like(depth), np.empty_like(depth)) if out is None else out
    if spacing is not None and spacing <= _WINDOW_MAX_SPACING:  # (the same result, faster for dense inputs)
        _nearest_window_kernel(depth, fill, dist)
    else:
        _nearest_kernel(depth, fill, dist)
    return fill, dist


@numba.njit(cache=True, nogil=True)
def _nearest_kernel(depth: np.ndarray, fill: np.ndarray, dist: np.ndarray) -> None:  # pragma: no cover - compiled
    """`_nearest_exact` into `fill` and `dist` ((H, W) float32); `depth` has at least one measurement (> 0)."""
    h, w = depth.shape
    none = np.int32(1 << 20)  # "no measurement in this column" (|row| >= none)
    src = np.empty((h, w), np.int32)  # row of the nearest measurement in the pixel's column
    last = np.full(w, -none, np.int32)
    for y in range(h):  # the last measurement above (or at) each pixel
        for x in range(w):
            last[x] = y if depth[y, x] > 0 else last[x]
            src[y, x] = last[x]
    nxt = np.full(w, none, np.int32)
    for y in range(h - 1, -1, -1):  # the nearer of it and the next one below (a tie: the one above)
        for x in range(w):
            nxt[x] = y if depth[y, x] > 0 else nxt[x]
            up = src[y, x]
            down = nxt[x]
            src[y, x] = down if down - y < y - up else up
    cols = np.empty(w, np.int64)  # the envelope: its parabolas' columns and values at x = 0 (dy² + x'²)
    vals = np.empty(w, np.int64)
    for y in range(h):
        k = -1
        for q in range(w):
            r = src[y, q]
            if r >= none or r <= -none:
                continue
            dy = np.int64(r - y)
            fq = dy * dy + q * q
            # Drop the last parabola while the new one is at or below it from where it starts (integer form of
            # "intersection(k, q) <= intersection(k - 1, k)"): the earlier one keeps a tie.
            while k >= 1 and (fq - vals[k]) * (cols[k] - cols[k - 1]) <= (vals[k] - vals[k - 1]) * (q - cols[k]):
                k -= 1
            k += 1
            cols[k] = q
            vals[k] = fq
        j = 0
        for x in range(w):
            c = cols[j]
            best = vals[j] - 2 * x * c
            while j < k and vals[j + 1] - 2 * x * cols[j + 1] < best:
                j += 1
                best = vals[j] - 2 * x * cols[j]
            c = cols[j]
            fill[y, x] = depth[src[y, c], c]
            dist[y, x] = np.sqrt(np.float32(best + x * x))


_NEAREST_WINDOW = 4
"""Half-width (columns) of the vectorized first search of `_nearest_kernel`: exact for every pixel whose nearest
measurement is nearer than `_NEAREST_WINDOW + 1` pixels; the others are searched on (few) or their row goes through
the envelope (many).  3, 4 and 6 with 3, 8 and 20 as the "many" divisor measured on the benchmark's cases: 4 and 3
fastest."""


_WINDOW_MAX_SPACING = 6.0
"""The window kernel serves measurement spacings up to this (KITTI 64 / 32 beams, TUM 5 %: 1.5x faster than the
envelope alone on their covered rows); sparser inputs (16 beams, TUM 1 %, spot grids) spend more on the farther
searches than they save (1.3-1.5x slower), so they use the envelope alone."""


@numba.njit(cache=True, nogil=True)
def _nearest_window_kernel(depth: np.ndarray, fill: np.ndarray, dist: np.ndarray) -> None:  # pragma: no cover
    """`_nearest_kernel`'s result by another route, faster where most pixels have a measurement within a few pixels
    (spacing <= `_WINDOW_MAX_SPACING`).

    Per column, the nearest measurement (row `src`, squared distance `g2`); per row, the column minimizing
    (x - x')² + g2(x'), first over a window of ±`_NEAREST_WINDOW` columns (vectorized, leftmost on ties), then, where
    that may not be the minimum, by a search farther out, or for the whole row by the lower envelope of the parabolas
    (Felzenszwalb & Huttenlocher 2012, in integers: the earlier parabola keeps a tie).  All three give the same
    (canonical) answer."""
    h, w = depth.shape
    R = _NEAREST_WINDOW
    lim = (R + 1) * (R + 1)  # a window result below this is the minimum
    none = np.int32(1 << 20)  # "no measurement in this column" (|row| >= none)
    big = np.int32(1 << 30)
    src = np.empty((h, w), np.int32)
    g2 = np.empty((h, w + 2 * R), np.int32)  # padded by R columns of `big` on each side
    last = np.full(w, -none, np.int32)
    for y in range(h):  # the last measurement above (or at) each pixel
        for x in range(w):
            last[x] = y if depth[y, x] > 0 else last[x]
            src[y, x] = last[x]
    nxt = np.full(w, none, np.int32)
    for y in range(h - 1, -1, -1):  # the nearer of it and the next one below (a tie: the one above)
        row = g2[y]
        for x in range(w):
            nxt[x] = y if depth[y, x] > 0 else nxt[x]
            up = src[y, x]
            down = nxt[x]
            r = down if down - y < y - up else up
            src[y, x] = r
            dy = min(abs(r - y), 20000)  # (no measurement: far beyond any real one, no overflow)
            row[x + R] = dy * dy
        for x in range(R):
            row[x] = big
            row[w + R + x] = big
    best = np.empty(w, np.int32)
    arg = np.empty(w, np.int32)
    cols = np.empty(w, np.int64)  # the envelope: its parabolas' columns and values at x = 0 (g2 + x'²)
    vals = np.empty(w, np.int64)
    for y in range(h):
        row = g2[y]
        win = row[0:w]
        for x in range(w):
            best[x] = win[x] + R * R
            arg[x] = x - R
        for k in range(1, 2 * R + 1):  # (slices and counters from 0: LLVM vectorizes these loops)
            dk = np.int32((k - R) * (k - R))
            win = row[k : k + w]
            for x in range(w):
                c = win[x] + dk
                t = c < best[x]
                best[x] = c if t else best[x]
                arg[x] = (x + k - R) if t else arg[x]
        far = 0
        for x in range(w):
            far += best[x] >= lim
        if far * 3 > w:  # the envelope for the whole row
            k = -1
            for q in range(w):
                r = src[y, q]
                if r >= none or r <= -none:
                    continue
                fq = np.int64(row[q + R]) + q * q
                # Drop the last parabola while the new one is at or below it from where it starts (integer form of
                # "intersection(k, q) <= intersection(k - 1, k)").
                while k >= 1 and (fq - vals[k]) * (cols[k] - cols[k - 1]) <= (vals[k] - vals[k - 1]) * (q - cols[k]):
                    k -= 1
                k += 1
                cols[k] = q
                vals[k] = fq
            j = 0
            for x in range(w):
                b = vals[j] - 2 * x * cols[j]
                while j < k and vals[j + 1] - 2 * x * cols[j + 1] < b:
                    j += 1
                    b = vals[j] - 2 * x * cols[j]
                best[x] = b + x * x
                arg[x] = cols[j]
        elif far:  # search on from the window's edge while a column can still be nearer (or tie on the left)
            for x in range(w):
                b = best[x]
                if b < lim:
                    continue
                a = arg[x]
                dx = R + 1
                while dx * dx <= b:
                    if x - dx >= 0:
                        c = row[x - dx + R] + dx * dx
                        if c <= b:
                            b = c
                            a = x - dx
                    if x + dx < w:
                        c = row[x + dx + R] + dx * dx
                        if c < b:
                            b = c
                            a = x + dx
                    dx += 1
                best[x] = b
                arg[x] = a
        for x in range(w):
            c = arg[x]
            fill[y, x] = depth[src[y, c], c]
            dist[y, x] = np.sqrt(np.float32(best[x]))


def _nearest(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest fill, distance to the nearest measurement in pixels) of a checked float32 map."""
    valid = depth > 0
    if not valid.any():
        raise DataError("sparse depth has no valid measurement")
    dist, labels = cv2.distanceTransformWithLabels(
        (~valid).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5, labelType=cv2.DIST_LABEL_PIXEL
    )
    # Labels number the zero pixels of the input (the measurements) in raster order, from 1.
    lut = np.empty(int(valid.sum()) + 1, np.float32)
    lut[0] = 0.0
    lut[1:] = depth[valid]
    return np.take(lut, labels), dist


@dataclass(frozen=True, kw_only=True)
class SparseStats:
    """Measured density of a sparse depth map (pixels).

    Attributes:
        count: number of measured pixels.
        spacing: typical gap between neighbouring measurements, pixels (>= 1).
        fill_ratio: measured pixels / pixels of the measurements' bounding box.
        max_depth: largest measured depth, metres.
    """

    count: int
    spacing: float
    fill_ratio: float
    max_depth: float


def sparse_stats(sparse: np.ndarray) -> SparseStats:
    """Density statistics of `sparse` ((H, W) float32 metres, 0 = missing), used to scale kernels.

    `spacing = sqrt(bounding-box area / count)` over the box spanned by the measurements: the grid step
    for regular patterns (spot grids), ~ the geometric mean of line and point spacing for LiDAR lines,
    ~ 1 for dense structured-light images with holes.

    Raises:
        DataError: if `sparse` has no measurement.
    """
    return _stats(_check_depth("sparse", sparse, finite=False))  # (`_stats` sees NaN / inf in its pass)


def _stats(depth: np.ndarray) -> SparseStats:
    """`SparseStats` of a float32 map (one pass; NaN / ±inf count as missing)."""
    count, r0, r1, c0, c1, bad = _extent(depth)
    if bad:
        depth = _finite(depth)
        count, r0, r1, c0, c1, bad = _extent(depth)
    if count == 0:
        raise DataError("sparse depth has no valid measurement")
    area = (r1 - r0 + 1) * (c1 - c0 + 1)
    return SparseStats(
        count=int(count),
        spacing=max(1.0, float(np.sqrt(area / count))),
        fill_ratio=count / area,
        max_depth=float(depth.max()),
    )


@numba.njit(cache=True, nogil=True)
def _extent(depth: np.ndarray) -> tuple[int, int, int, int, int, int]:  # pragma: no cover - compiled
    """(count of pixels > 0, first / last row and column holding one, count of NaN / ±inf) in one pass (integer
    counts only: LLVM vectorizes them; the largest value is numpy's)."""
    h, w = depth.shape
    count = 0
    bad = 0
    r0, r1, c0, c1 = h, -1, w, -1
    for y in range(h):
        d = depth[y]
        n = 0
        for x in range(w):
            v = d[x]
            n += v > 0
            bad += v - v != 0  # NaN and ±inf (inf - inf is NaN)
        if bad:
            return 0, 0, 0, 0, 0, bad
        if n:
            count += n
            r0 = min(r0, y)
            r1 = y
            x = 0
            while d[x] <= 0:
                x += 1
            c0 = min(c0, x)
            x = w - 1
            while d[x] <= 0:
                x -= 1
            c1 = max(c1, x)
    return count, r0, r1, c0, c1, 0


def _odd(x: float, lo: int = 3, hi: int = 255) -> int:
    n = int(np.clip(round(x), lo, hi))
    return n if n % 2 == 1 else n + 1


@dataclass(frozen=True, kw_only=True)
class FillResult:
    """Output of `classical_fill_detailed`.

    Attributes:
        depth: (H, W) float32 metres, > 0 everywhere, the initial fill.
        anchors: (H, W) float32 metres, the measurements kept (outliers set to 0).
        distance: (H, W) float32 pixels to the nearest kept measurement.
        stats: density statistics of the input.
    """

    depth: np.ndarray
    anchors: np.ndarray
    distance: np.ndarray
    stats: SparseStats


def classical_fill_detailed(
    sparse: np.ndarray,
    *,
    outlier_tolerance: float = OUTLIER_TOLERANCE,
    outlier_max_fill_ratio: float = 0.5,
    blur: float = 0.15,
    rows: tuple[int, int] | None = None,
    stats: SparseStats | None = None,
    extend_above: int = 0,
) -> FillResult:
    """The default's initial fill: outlier rejection, nearest fill, density-scaled gaussian smoothing.

    1. Sparse inputs (fill ratio < `outlier_max_fill_ratio`): measurements lying more than `outlier_tolerance`
       behind the near surface (IP-Basic morphology in inverted depth, kernels scaled to the spacing) are dropped
       (`reject_outliers`).
    2. Nearest fill of the kept measurements.  Sparse inputs: a filled pixel more than `outlier_tolerance` behind the
       surface enclosing it (a closing over 2.5 spacings: gaps between nearer measurements) takes that surface's
       depth, so holes in a near object are not filled with what lies behind it.
    3. A gaussian blur with sigma = `blur` * spacing + 0.5 px (smooths the nearest-fill steps; the RGB propagation
       afterwards restores edges).
    4. Kept measurements keep their value.

    With `rows = (r0, r1)` only that band of rows is filled, equal to `[r0:r1]` of the whole-image result: the
    band reads the rows around it that it needs (the morphology's reach, and a margin for the nearest fill whose
    every pixel is checked: one whose nearest measurement might lie beyond the margin makes the band fall back to
    the whole image).  Bands of one image can be filled on parallel threads.

    With `extend_above = t > 0` (no measurement above row t), the rows above t take the nearest fill of row t
    (IP-Basic's extension to the top; its distance plus the rows between): the exact nearest fill runs on rows >= t
    only (a LiDAR's sky: ~25 % of a KITTI frame's nearest fill).

    Args:
        sparse: (H, W) float32 metres, 0 = missing.
        outlier_tolerance: relative depth excess over the near surface that rejects a point (0 = off).
        outlier_max_fill_ratio: rejection only below this fill ratio (LiDAR-like inputs).
        blur: gaussian sigma in units of the measurement spacing.
        rows: optional band of rows (0 <= r0 < r1 <= H).
        stats: `sparse_stats(sparse)` of the whole image, when the caller has it (bands share it).
        extend_above: first row of the exact nearest fill (0 = all rows; nothing may be measured above it).

    Returns:
        `FillResult` of the band (rows r1 - r0) or of the whole image.

    Raises:
        DataError: if `sparse` has no measurement.
        ValueError: rows outside the image, or a measurement above `extend_above`.
    """
    depth = _check_depth("sparse", sparse)
    h = depth.shape[0]
    st = _stats(depth) if stats is None else stats
    r0, r1 = (0, h) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= r0 < r1 <= h:
        raise ValueError(f"rows must satisfy 0 <= r0 < r1 <= {h}, got {rows}")
    sig = blur * st.spacing + 0.5
    k_blur = _odd(4.0 * sig + 1.0, 3, 255) if blur > 0 else 1
    reject = outlier_tolerance > 0 and st.fill_ratio < outlier_max_fill_ratio
    kernels = _SurfaceKernels.for_spacing(st.spacing)
    top = int(extend_above)
    if not 0 <= top < h:
        raise ValueError(f"extend_above must satisfy 0 <= t < {h}, got {extend_above}")
    if top > 0 and cv2.countNonZero(cv2.compare(depth[:top], 0.0, cv2.CMP_GT)):
        raise ValueError(f"extend_above={top}: a measurement lies above that row")
    # Rows whose nearest fill must be exact: the band and the blur's reach around it (row `top` for rows above it).
    f0, f1 = max(0, r0 - k_blur // 2), min(h, r1 + k_blur // 2)
    e0, e1 = max(f0, top), max(f1, top + 1)
    margin = int(32 + 4 * np.ceil(st.spacing))
    d0, d1 = min(f0, max(top, e0 - margin)), min(h, e1 + margin)
    region = _nearest_region(depth, st, (d0, d1), (e0, e1), reject, outlier_tolerance, kernels, top)
    if region is None:  # a nearest measurement may lie beyond the margin: the whole image, then
        region = _nearest_region(depth, st, (0, h), (e0, e1), reject, outlier_tolerance, kernels, top)
        d0 = 0
    fill, dist, anchors, kept = region
    fill, dist = fill[f0 - d0 : f1 - d0], dist[r0 - d0 : r1 - d0]
    anchors, kept = anchors[r0 - d0 : r1 - d0], kept[r0 - d0 : r1 - d0]
    if blur > 0:
        fill = cv2.GaussianBlur(fill, (k_blur, k_blur), sig)
    fill = np.ascontiguousarray(fill[r0 - f0 : r1 - f0])
    np.copyto(fill, anchors, where=kept)
    return FillResult(depth=fill, anchors=np.ascontiguousarray(anchors), distance=np.ascontiguousarray(dist), stats=st)


def _nearest_region(
    depth: np.ndarray,
    st: SparseStats,
    region: tuple[int, int],
    exact: tuple[int, int],
    reject: bool,
    tolerance: float,
    kernels: _SurfaceKernels,
    top: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(nearest fill, distance, anchors, kept) of rows `region` of `depth`, or None when rows `exact` may differ
    from the whole-image result (a pixel no nearer to its measurement than to the region's cut rows).  Nothing is
    measured above row `top`: a region starting at or above it is not cut above, and its rows above `top` take row
    `top`'s fill (distance + the rows between)."""
    h = depth.shape[0]
    d0, d1 = region
    reach = kernels.reach if reject else 0
    j0, j1 = max(0, d0 - reach), min(h, d1 + reach)
    sub = depth[j0:j1]
    anchors = sub
    whole = d0 <= top and d1 == h
    surfaces = None
    if reject:
        surfaces = _near_surfaces(sub, st, kernels)
        valid = np.zeros(sub.shape, np.bool_)
        anchors = np.zeros(sub.shape, np.float32)
        count = _keep(sub, surfaces.near, surfaces.r0, np.float32(1.0 + tolerance), anchors, valid)
        # (The image's nearest measurement is never rejected, so nothing is kept only in a band: then the whole.)
        if count == 0 and whole:
            anchors, valid = sub, sub > 0
    else:
        valid = sub > 0
    anchors, valid = anchors[d0 - j0 : d1 - j0], valid[d0 - j0 : d1 - j0]
    if not whole and not valid.any():
        return None
    # The exact nearest fill of rows [n0, d1), written into the region's arrays; rows above `top` copy row `top`.
    n0 = max(d0, top)
    fill = np.empty(anchors.shape, np.float32)
    dist = np.empty(anchors.shape, np.float32)
    _nearest_exact(np.ascontiguousarray(anchors[n0 - d0 :]), st.spacing, out=(fill[n0 - d0 :], dist[n0 - d0 :]))
    if not whole:
        # Any measurement beyond a cut row is at least as far as that row: a pixel strictly nearer to its measurement
        # found here than to both cuts has the whole-image result.
        y = np.arange(max(exact[0], n0), exact[1])
        room = np.minimum(y - d0 + 1 if d0 > top else np.inf, d1 - y if d1 < h else np.inf).astype(np.float32)
        if (dist[y[0] - d0 : exact[1] - d0] >= room[:, None]).any():
            return None
    if surfaces is not None:
        _prefer_enclosing_surface(fill[n0 - d0 :], n0 - j0, surfaces, tolerance)
    if n0 > d0:
        fill[: n0 - d0] = fill[n0 - d0]
        np.add(dist[n0 - d0], np.arange(n0 - d0, 0, -1, dtype=np.float32)[:, None], out=dist[: n0 - d0])
    return fill, dist, anchors, valid


def classical_fill(sparse: np.ndarray, **kwargs: float) -> np.ndarray:
    """`classical_fill_detailed(sparse, **kwargs).depth`: (H, W) float32 metres, > 0 everywhere."""
    return classical_fill_detailed(sparse, **kwargs).depth


@dataclass(frozen=True)
class _SurfaceKernels:
    """Morphology kernel sizes (odd, pixels) for a measurement spacing, and the rows they read around a pixel."""

    near: int
    """The near surface that rejects measurements: a diamond dilation, then a closing (IP-Basic), ~ the spacing."""
    enclosing: int
    """The surface enclosing gaps between measurements: a closing alone, 2.5 spacings (fills gaps, never extends a
    surface past its measurements).  Swept over 1.5-3 spacings on the benchmark's cases: 2-2.5 improved every KITTI
    density and held-out LiDAR points of the KITTI object frame; 3 bridged the TUM spot grid's gaps (RMSE +7 %)."""

    @classmethod
    def for_spacing(cls, spacing: float) -> _SurfaceKernels:
        return cls(near=_odd(spacing + 1.0, 3, 63), enclosing=_odd(2.5 * spacing + 1.0, 3, 255))

    @property
    def reach(self) -> int:
        """Rows read on each side: 3 half-kernels for the near surface, 2 for the enclosing one."""
        return max(3 * (self.near // 2), 2 * (self.enclosing // 2))


@dataclass(frozen=True)
class _Surfaces:
    """Depths (metres) over rows [r0, r1) of the local near surface and (when asked for) of the surface enclosing gaps
    between measurements, from IP-Basic morphology in inverted depth; where there is none, the inversion reference
    1.05 × the largest depth + 1 m (beyond every measurement).  The other rows hold no measurement within the
    kernels' reach: no surface."""

    near: np.ndarray
    enclosing: np.ndarray | None
    r0: int
    r1: int


def _near_surfaces(
    depth: np.ndarray, st: SparseStats, kernels: _SurfaceKernels, *, enclosing: bool = True
) -> _Surfaces:
    ref = np.float32(st.max_depth * 1.05 + 1.0)
    inv, r0, r1 = _inverted(np.ascontiguousarray(depth), ref, kernels.reach)
    if r0 == r1:
        empty = np.empty((0, depth.shape[1]), np.float32)
        return _Surfaces(near=empty, enclosing=empty if enclosing else None, r0=0, r1=0)
    near = cv2.dilate(inv, _diamond(kernels.near))
    near = cv2.morphologyEx(near, cv2.MORPH_CLOSE, _full(kernels.near))
    closed = cv2.morphologyEx(inv, cv2.MORPH_CLOSE, _full(kernels.enclosing)) if enclosing else None
    return _Surfaces(
        near=np.subtract(ref, near, out=near),
        enclosing=None if closed is None else np.subtract(ref, closed, out=closed),
        r0=int(r0),
        r1=int(r1),
    )


@numba.njit(cache=True, nogil=True)
def _inverted(depth: np.ndarray, ref: np.float32, reach: int) -> tuple[np.ndarray, int, int]:  # pragma: no cover
    """(`ref - depth` where depth > 0 else 0, over rows [r0, r1), r0, r1): the rows with a measurement and `reach`
    rows around them (r0 = r1 = 0 when there is none), in one pass."""
    h, w = depth.shape
    first, last = -1, -1
    for y in range(h):
        d = depth[y]
        for x in range(w):
            if d[x] > 0:
                if first < 0:
                    first = y
                last = y
                break
    if first < 0:
        return np.empty((0, w), np.float32), 0, 0
    r0, r1 = max(0, first - reach), min(h, last + 1 + reach)
    inv = np.empty((r1 - r0, w), np.float32)
    zero = np.float32(0.0)
    for y in range(r0, r1):
        d = depth[y]
        o = inv[y - r0]
        for x in range(w):
            o[x] = ref - d[x] if d[x] > 0 else zero
    return inv, r0, r1


def _reject(depth: np.ndarray, surfaces: _Surfaces, tolerance: float) -> np.ndarray:
    """Kept-measurement mask: measured (> 0) and not farther than (1 + tolerance) × the near surface."""
    kept = np.zeros(depth.shape, np.bool_)
    _keep(np.ascontiguousarray(depth), surfaces.near, surfaces.r0, np.float32(1.0 + tolerance), None, kept)
    return kept


@numba.njit(cache=True, nogil=True)
def _keep(
    depth: np.ndarray, near: np.ndarray, r0: int, factor: np.float32, anchors: np.ndarray | None, kept: np.ndarray
) -> int:  # pragma: no cover - compiled
    """kept = depth > 0 and not depth > near × factor over the surface rows [r0, r0 + len(near)) (no measurement
    lies outside them; `kept` and `anchors` are already zero there); anchors = depth where kept, else 0.  Returns
    the kept count."""
    count = 0
    for y in range(near.shape[0]):
        d = depth[r0 + y]
        n = near[y]
        k = kept[r0 + y]
        for x in range(d.shape[0]):
            keep = d[x] > 0 and not d[x] > n[x] * factor  # never behind where there is no surface (`ref`)
            k[x] = keep
            count += keep
        if anchors is not None:
            a = anchors[r0 + y]
            zero = np.float32(0.0)
            for x in range(d.shape[0]):
                a[x] = d[x] if k[x] else zero
    return count


def _prefer_enclosing_surface(fill: np.ndarray, row0: int, surfaces: _Surfaces, tolerance: float) -> None:
    """Pixels of `fill` (its first row is row `row0` of the surfaces' image) more than (1 + tolerance) behind the
    surface enclosing them take that surface's depth, in place: a gap in a nearer surface is filled from that
    surface, not from a farther measurement seen through it (IP-Basic's closing)."""
    a0, a1 = max(row0, surfaces.r0), min(row0 + len(fill), surfaces.r1)
    if a0 >= a1 or surfaces.enclosing is None:
        return
    _take_enclosing(
        fill[a0 - row0 : a1 - row0], surfaces.enclosing[a0 - surfaces.r0 : a1 - surfaces.r0], np.float32(1 + tolerance)
    )


@numba.njit(cache=True, nogil=True)
def _take_enclosing(fill: np.ndarray, enclosing: np.ndarray, factor: np.float32) -> None:  # pragma: no cover
    """fill = enclosing where fill > enclosing × factor, in place (rows of equal shape)."""
    for y in range(fill.shape[0]):
        f = fill[y]
        e = enclosing[y]
        for x in range(f.shape[0]):
            f[x] = e[x] if f[x] > e[x] * factor else f[x]


def reject_outliers(sparse: np.ndarray, *, tolerance: float = OUTLIER_TOLERANCE) -> np.ndarray:
    """Remove measurements lying behind the local surface (LiDAR points seen through foreground objects).

    A measurement is dropped when it is more than `tolerance` (relative) farther than the near surface:
    IP-Basic morphology (diamond dilation + closing, kernel ~ the spacing) in inverted depth.

    Args:
        sparse: (H, W) float32 metres, 0 = missing.

    Returns:
        (H, W) float32 metres, a copy with the rejected measurements set to 0.

    Raises:
        DataError: if `sparse` has no measurement.
    """
    depth = _check_depth("sparse", sparse)
    st = _stats(depth)
    surfaces = _near_surfaces(depth, st, _SurfaceKernels.for_spacing(st.spacing), enclosing=False)
    kept = _reject(depth, surfaces, tolerance)
    return np.where(kept, depth, np.float32(0.0))
