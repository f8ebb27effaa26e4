"""Depth-completion metrics as the KITTI devkit defines them, plus RGB-D metrics and sparsification.

All inputs are float metres with 0 (or non-finite) = no data.  KITTI metrics are computed per image over
pixels with valid ground truth, then averaged over images (`mean_metrics`): RMSE and MAE in millimetres,
iRMSE and iMAE in 1/km.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .errors import ShapeError

__all__ = [
    "DepthMetrics",
    "compute_metrics",
    "mean_metrics",
    "sparsification",
]

_MIN_PRED_M = 1e-3
"""Predictions are clamped to at least 1 mm before inversion so iRMSE/iMAE stay finite."""


@dataclass(frozen=True)
class DepthMetrics:
    """Per-image (or averaged) depth error.  Units in the field names."""

    rmse_mm: float
    mae_mm: float
    irmse_per_km: float
    imae_per_km: float
    rel: float
    delta1: float
    delta2: float
    delta3: float
    valid_pixels: int

    def as_dict(self) -> dict[str, float]:
        """Plain dict, for JSON."""
        return asdict(self)


def compute_metrics(pred: np.ndarray, gt: np.ndarray) -> DepthMetrics:
    """Metrics of one image over pixels where `gt` > 0 and finite.

    Args:
        pred: (H, W) predicted depth, metres.  Missing predictions (<= 0, NaN) count as 1 mm away.
        gt: (H, W) ground-truth depth, metres, 0 = no ground truth.

    Raises:
        ShapeError: if the shapes differ or no pixel has ground truth.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ShapeError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    valid = np.isfinite(gt) & (gt > 0)
    n = int(valid.sum())
    if n == 0:
        raise ShapeError("ground truth has no valid pixel")
    g = gt[valid]
    p = np.nan_to_num(pred[valid], nan=0.0, posinf=0.0, neginf=0.0)
    p = np.maximum(p, _MIN_PRED_M)
    err = p - g
    ierr = 1.0 / p - 1.0 / g  # 1/m
    ratio = np.maximum(p / g, g / p)
    return DepthMetrics(
        rmse_mm=float(np.sqrt(np.mean(err**2)) * 1000.0),
        mae_mm=float(np.mean(np.abs(err)) * 1000.0),
        irmse_per_km=float(np.sqrt(np.mean(ierr**2)) * 1000.0),
        imae_per_km=float(np.mean(np.abs(ierr)) * 1000.0),
        rel=float(np.mean(np.abs(err) / g)),
        delta1=float(np.mean(ratio < 1.25)),
        delta2=float(np.mean(ratio < 1.25**2)),
        delta3=float(np.mean(ratio < 1.25**3)),
        valid_pixels=n,
    )


def mean_metrics(per_image: Iterable[DepthMetrics]) -> DepthMetrics:
    """Mean over images of per-image metrics (KITTI order: per image first, then over images)."""
    items = list(per_image)
    if not items:
        raise ShapeError("no images to average")
    fields: Mapping[str, list[float]] = {k: [float(getattr(m, k)) for m in items] for k in asdict(items[0])}
    values = {k: float(np.mean(v)) for k, v in fields.items()}
    values["valid_pixels"] = int(sum(m.valid_pixels for m in items))
    return DepthMetrics(**values)  # type: ignore[arg-type]


def sparsification(
    pred: np.ndarray,
    gt: np.ndarray,
    confidence: np.ndarray,
    fractions: Sequence[float] = tuple(np.linspace(0.0, 0.95, 20)),
) -> dict[str, list[float] | float]:
    """Sparsification curve of RMSE (mm) against removing the least-confident pixels.

    For each fraction f, the RMSE over the (1 - f) most-confident ground-truth pixels, next to the oracle
    curve (removing the largest errors first).  AUSE is the mean gap between the two curves, in mm,
    normalised by nothing (the trapezoid area over f in [0, max f]).

    Returns:
        dict with `fractions`, `rmse_mm`, `oracle_rmse_mm`, `ause_mm` and `rmse_ratio_top50`
        (RMSE over the 50 % most-confident pixels / RMSE over all).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64)
    if not (pred.shape == gt.shape == conf.shape):
        raise ShapeError(f"shapes differ: pred {pred.shape}, gt {gt.shape}, confidence {conf.shape}")
    valid = np.isfinite(gt) & (gt > 0)
    if not valid.any():
        raise ShapeError("ground truth has no valid pixel")
    p = np.maximum(np.nan_to_num(pred[valid], nan=0.0), _MIN_PRED_M)
    sq = (p - gt[valid]) ** 2
    c = np.nan_to_num(conf[valid], nan=0.0)
    by_conf = sq[np.argsort(-c, kind="stable")]  # most confident first
    by_err = np.sort(sq)  # smallest error first
    n = sq.size

    def curve(sorted_sq: np.ndarray) -> list[float]:
        csum = np.cumsum(sorted_sq)
        out = []
        for f in fractions:
            keep = max(1, round(n * (1.0 - f)))
            out.append(float(np.sqrt(csum[keep - 1] / keep) * 1000.0))
        return out

    rmse = curve(by_conf)
    oracle = curve(by_err)
    gap = np.asarray(rmse) - np.asarray(oracle)
    fr = np.asarray(fractions, dtype=np.float64)
    ause = float(np.sum((gap[1:] + gap[:-1]) * np.diff(fr)) / 2.0) if len(fr) > 1 else float(gap[0])
    half = max(1, round(n * 0.5))
    top50 = float(np.sqrt(np.cumsum(by_conf)[half - 1] / half) / np.sqrt(sq.mean()))
    return {
        "fractions": [float(f) for f in fractions],
        "rmse_mm": rmse,
        "oracle_rmse_mm": oracle,
        "ause_mm": ause,
        "rmse_ratio_top50": top50,
    }
