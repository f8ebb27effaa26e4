"""One completion API: `DepthCompleter(config).complete(rgb, sparse_depth) -> (depth, confidence)`.

Methods: "default" (weight-free: classical fill + RGB-affinity CSPN, CPU) and "cspn" (the learned model
from a safetensors checkpoint).  The device is chosen once, at construction.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .affinity import anchored_pair_affinity, colour_sigma
from .confidence import default_confidence, edge_window
from .device import resolve_device
from .errors import CheckpointError, DataError, ShapeError
from .fill import OUTLIER_TOLERANCE, classical_fill_detailed, sparse_stats
from .propagation import cspn_propagate_pairs

__all__ = ["CompleterConfig", "DepthCompleter"]


@dataclass(frozen=True, kw_only=True)
class CompleterConfig:
    """Configuration of `DepthCompleter`.

    Attributes:
        method: "default" (weight-free) or "cspn" (learned, needs `checkpoint`).
        checkpoint: safetensors checkpoint for "cspn".
        device: "auto" (CUDA when available), "cpu" or "cuda".
        iterations: CSPN iterations of the default method (the learned model runs its checkpoint's count;
            `DepthCompleter.reconfigure(iterations=...)` changes either at run time).
        max_depth: output clipped to (0, max_depth] metres.
        colour_sigma_scale: affinity colour-kernel width, in units of the image's median colour step.
        anchor: weight of the initial fill in the propagation (affinities normalised by sum + anchor).
        outlier_tolerance: relative tolerance of the outlier rejection (sparse inputs only); 0 = off.
        fill_blur: gaussian sigma of the initial fill, in units of the measurement spacing.
        allow_random_weights: "cspn" without checkpoint uses random weights (benchmarks only).
        bands: the default method fills, weights, propagates and scores this many row bands on parallel threads
            (1 = all on the calling thread); the bands overlap by enough rows that the result is identical.
        num_threads: torch CPU threads (0 = leave torch's setting). Default 1: on a 2-core machine that also
            runs DDS and the executor, torch's default (one thread per core) oversubscribed the CPU and made a
            propagation step ~30x slower (0.1 -> 3 ms per neighbour update, measured).
    """

    method: str = "default"
    checkpoint: str | Path | None = None
    device: str = "auto"
    iterations: int = 4
    max_depth: float = 1000.0
    colour_sigma_scale: float = 1.0
    anchor: float = 0.5
    outlier_tolerance: float = OUTLIER_TOLERANCE
    fill_blur: float = 0.15
    allow_random_weights: bool = False
    num_threads: int = 1
    bands: int = 2


class DepthCompleter:
    """Dense depth + confidence from RGB + sparse depth."""

    def __init__(self, config: CompleterConfig | None = None) -> None:
        """Build the completer; loads the checkpoint for method "cspn".

        Raises:
            CheckpointError: "cspn" without a usable checkpoint (and not `allow_random_weights`).
            ValueError: unknown method or device.
        """
        self.config = config or CompleterConfig()
        cfg = self.config
        if cfg.method not in ("default", "cspn"):
            raise ValueError(f"method must be 'default' or 'cspn', got {cfg.method!r}")
        from .model import MAX_ITERATIONS

        if not 0 <= cfg.iterations <= MAX_ITERATIONS:
            raise ValueError(f"iterations must be in 0..{MAX_ITERATIONS} (work per frame), got {cfg.iterations}")
        if cfg.bands < 1:
            raise ValueError(f"bands must be >= 1, got {cfg.bands}")
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        # The weight-free default is OpenCV + a few CPU propagation steps: moving it to a GPU costs more in
        # transfers than it saves, so only the learned model follows `device`.
        self._device = resolve_device(cfg.device) if cfg.method == "cspn" else torch.device("cpu")
        self._model: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._model_name = "ip-basic-family fill + rgb-affinity cspn (weight-free)"
        if cfg.method == "cspn":
            self._load_model()
        else:
            # Load (or, the first time on a machine, compile) the numba propagation kernel now, not on the first frame.
            tiny = np.ones((2, 2), np.float32)
            cspn_propagate_pairs(tiny, np.zeros((4, 4, 4), np.float32), tiny, anchor=1.0, iterations=1, sparse=tiny)

    def _pool(self) -> ThreadPoolExecutor:
        """Worker threads for the bands after the first (created on first use)."""
        if self._executor is None:
            workers = max(1, self.config.bands - 1)
            self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dcr-completer")
        return self._executor

    def _load_model(self) -> None:
        cfg = self.config
        if cfg.checkpoint is None:
            if not cfg.allow_random_weights:
                raise CheckpointError("method 'cspn' needs a checkpoint (--checkpoint CKPT.safetensors)")
            from .model import CSPNModelConfig, CSPNNet

            self._model = CSPNNet(CSPNModelConfig())
            self._model_name = "cspn (random weights)"
        else:
            path = Path(cfg.checkpoint)
            if not path.is_file():
                raise CheckpointError(f"checkpoint not found: {path}")
            from .checkpoint import load_checkpoint

            try:
                model, _, meta = load_checkpoint(path, map_location=self._device)
            except CheckpointError:
                raise
            except Exception as exc:  # any unreadable file becomes one clear error
                raise CheckpointError(f"cannot load checkpoint {path}: {exc}") from exc
            self._model = model
            name = meta.get("name") if isinstance(meta, dict) else None
            self._model_name = f"cspn ({name or path.name})"
        self._model = self._model.to(self._device).eval()

    @property
    def iterations(self) -> int:
        """CSPN propagation steps per frame (the learned model's, for method "cspn")."""
        if self._model is not None:
            return int(self._model.config.iterations)
        return int(self.config.iterations)

    def reconfigure(self, *, iterations: int | None = None, max_depth: float | None = None) -> None:
        """Apply run-time changes in memory (nothing is reloaded; the model in use is kept).

        Args:
            iterations: propagation steps, 0..`model.MAX_ITERATIONS` (method "cspn": the learned model's).
            max_depth: output clip, metres (> 0, finite).

        Raises:
            ValueError: a value out of range (nothing is changed).
        """
        from .model import MAX_ITERATIONS

        changes: dict[str, Any] = {}
        if iterations is not None:
            if isinstance(iterations, bool) or not isinstance(iterations, int) or not 0 <= iterations <= MAX_ITERATIONS:
                raise ValueError(f"iterations must be an integer in 0..{MAX_ITERATIONS}, got {iterations!r}")
            changes["iterations"] = iterations
        if max_depth is not None:
            if not (isinstance(max_depth, (int, float)) and math.isfinite(max_depth) and max_depth > 0):
                raise ValueError(f"max_depth must be a finite number of metres > 0, got {max_depth!r}")
            changes["max_depth"] = float(max_depth)
        if self._model is not None and iterations is not None:
            self._model.config = replace(self._model.config, iterations=iterations)
        self.config = replace(self.config, **changes)

    @property
    def device(self) -> torch.device:
        """Device the completer runs on (the default method always runs on the CPU)."""
        return self._device

    @property
    def method(self) -> str:
        """ "default" or "cspn"."""
        return self.config.method

    @property
    def model_name(self) -> str:
        """Human-readable name of the model / algorithm."""
        return self._model_name

    def complete(self, rgb: np.ndarray, sparse_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Complete `sparse_depth` guided by `rgb`.

        Args:
            rgb: (H, W, 3) uint8 RGB.
            sparse_depth: (H, W) float32 metres along the optical axis, 0 = missing (NaN/inf = missing).

        Returns:
            depth (H, W) float32 metres (> 0), confidence (H, W) float32 in [0, 1].

        Raises:
            ShapeError: wrong shapes / dtypes or sizes that differ.
            DataError: no valid measurement in `sparse_depth`.
        """
        rgb_a, sparse = _validate(rgb, sparse_depth)
        if self.config.method == "cspn":
            try:
                return self._complete_cspn(rgb_a, sparse)
            except torch.cuda.OutOfMemoryError:
                if self._device.type != "cuda":
                    raise
                # Out of GPU memory: fall back to the CPU for good (a robot keeps running, slower).
                warnings.warn(
                    "CUDA out of memory; the learned model falls back to the CPU", RuntimeWarning, stacklevel=2
                )
                torch.cuda.empty_cache()
                self._device = torch.device("cpu")
                self._model = self._model.to(self._device)
                return self._complete_cspn(rgb_a, sparse)
        return self._complete_default(rgb_a, sparse)

    def _complete_default(self, rgb: np.ndarray, sparse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fill, RGB affinities, CSPN and confidence, in row bands on parallel threads.

        A band is computed over its rows plus `halo` rows on each side and keeps its own rows: a propagation step
        reaches one row further (a band edge, seen as an image border, is wrong after n steps for n rows), and the
        confidence looks `edge_window // 2` rows further; the fill of a band equals the whole image's
        (`classical_fill_detailed(rows=...)`).  So the result does not depend on the number of bands.  (The fill's
        distance transform is compute-bound and gains most from the second core.)
        """
        cfg = self.config
        fill_args = {"outlier_tolerance": cfg.outlier_tolerance, "blur": cfg.fill_blur}
        if cfg.iterations == 0:
            fr = classical_fill_detailed(sparse, **fill_args)
            depth = np.clip(fr.depth, np.float32(1e-3), np.float32(cfg.max_depth))
            return depth, default_confidence(depth, fr.depth, fr.anchors > 0, fr.stats.spacing, distance=fr.distance)
        stats = sparse_stats(sparse)
        sigma: Future[float] = Future()  # one colour scale for every band, computed first on this thread
        h, w = sparse.shape
        halo = cfg.iterations + edge_window(stats.spacing) // 2 + 1
        bands = max(1, min(cfg.bands, h // (4 * halo)))  # bands much taller than their halo, or one
        points_per_row = cv2.reduce((sparse > 0).view(np.uint8), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()
        cuts = _balanced_cuts(points_per_row, w, bands, min_rows=2 * halo)
        depth = np.empty((h, w), np.float32)
        conf = np.empty((h, w), np.float32)

        def run(i: int) -> None:
            r0, r1 = cuts[i], cuts[i + 1]
            c0, c1 = max(0, r0 - halo), min(h, r1 + halo)
            fr = classical_fill_detailed(sparse, rows=(c0, c1), stats=stats, **fill_args)
            aff = anchored_pair_affinity(
                rgb[c0:c1], anchor=cfg.anchor, sigma=sigma.result(), sigma_scale=cfg.colour_sigma_scale
            )
            d = cspn_propagate_pairs(  # a fresh array: clipped in place
                fr.depth, aff.pairs, aff.inv_norm, anchor=aff.anchor, iterations=cfg.iterations, sparse=fr.anchors
            )
            np.clip(d, np.float32(1e-3), np.float32(cfg.max_depth), out=d)
            c = default_confidence(d, fr.depth, fr.anchors > 0, stats.spacing, distance=fr.distance)
            depth[r0:r1] = d[r0 - c0 : r1 - c0]
            conf[r0:r1] = c[r0 - c0 : r1 - c0]

        others = [self._pool().submit(run, i) for i in range(1, bands)]
        try:
            try:
                sigma.set_result(colour_sigma(rgb))
            except BaseException as exc:  # the other bands wait on it: hand them the error too
                sigma.set_exception(exc)
                raise
            run(0)
        finally:
            wait(others)  # no worker outlives the call, even when this band raised
        for f in others:
            f.result()
        return depth, conf

    def _complete_cspn(self, rgb: np.ndarray, sparse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dev = self._device
        with torch.inference_mode():
            x = torch.from_numpy(rgb).to(dev).permute(2, 0, 1)[None].float().div_(255.0)
            s = torch.from_numpy(sparse).to(dev)[None, None]
            m = (s > 0).float()
            with torch.autocast(device_type="cuda", enabled=dev.type == "cuda"):
                out = self._model(x, s, m)
            depth = out["pred"].float()[0, 0].cpu().numpy()
            conf = out["confidence"]
            conf = conf.float()[0, 0].cpu().numpy() if conf is not None else np.ones_like(depth, dtype=np.float32)
        depth = np.clip(np.nan_to_num(depth, nan=0.0), np.float32(1e-3), np.float32(self.config.max_depth))
        conf = np.clip(np.nan_to_num(conf, nan=0.0), 0.0, 1.0).astype(np.float32)
        conf[sparse > 0] = 1.0
        return depth.astype(np.float32), conf


_POINT_COST_PX = 6.0
"""Measured cost of one sparse measurement in the banded default (the fill's labelled distance transform, outlier
rejection and surfaces, cropped to the rows with measurements), in pixels of the per-pixel work (fill, affinity,
propagation, confidence): with it both bands of the 1242×375 KITTI frames end within ~0.5 ms of each other."""

_COLOUR_SIGMA_COST = 0.11
"""Cost of `colour_sigma` (computed by the first band's thread before its band) as a fraction of the whole image's
per-pixel work: ~0.08 alone, more while the other band runs (memory-bound); 0.11 ended both bands together in
1242×375 KITTI timelines (0.08: the first band ~1.5 ms later, 0.15: ~2 ms earlier)."""


def _balanced_cuts(points_per_row: np.ndarray, width: int, bands: int, *, min_rows: int) -> list[int]:
    """Row cuts (0 = c_0 < ... < c_bands = H) giving the bands about equal estimated work: `width` per row plus
    `_POINT_COST_PX` per measurement, the first band also carrying the colour scale.  Every band gets at least
    `min_rows` rows (when H allows); the result does not depend on the cuts, only the timing does."""
    h = len(points_per_row)
    if bands <= 1:
        return [0, h]
    cost = np.cumsum(width + _POINT_COST_PX * points_per_row.astype(np.float64))
    lead = _COLOUR_SIGMA_COST * h * width
    total = cost[-1] + lead
    cuts = [0]
    for i in range(1, bands):
        target = i * total / bands - lead  # work of rows [0, cut)
        k = int(np.searchsorted(cost, target))  # rows [0, k] reach the target
        cut = k + 1 if k == 0 or k >= h or cost[k] - target < target - cost[k - 1] else k
        lo, hi = cuts[-1] + min_rows, h - (bands - i) * min_rows
        cuts.append(int(np.clip(cut, lo, hi)) if lo <= hi else round(i * h / bands))
    cuts.append(h)
    return cuts


def _validate(rgb: np.ndarray, sparse_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rgb)
    s = np.asarray(sparse_depth)
    if r.ndim != 3 or r.shape[2] != 3:
        raise ShapeError(f"rgb: expected shape (H, W, 3), got {r.shape}")
    if r.dtype != np.uint8:
        raise ShapeError(f"rgb: expected dtype uint8, got {r.dtype}")
    if s.ndim != 2:
        raise ShapeError(f"sparse_depth: expected shape (H, W), got {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        raise ShapeError(f"sparse_depth: expected float metres, got dtype {s.dtype}")
    if r.shape[:2] != s.shape:
        raise ShapeError(f"rgb size {r.shape[:2]} != sparse_depth size {s.shape}")
    s = _clean_depth(np.ascontiguousarray(s, dtype=np.float32))
    if not (s > 0).any():
        raise DataError("sparse_depth has no valid measurement")
    return np.ascontiguousarray(r), s


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _clean_depth(s: np.ndarray) -> np.ndarray:
    """A copy of (H, W) float32 `s` with NaN, ±inf and values <= 0 set to 0 (missing)."""
    if np.isnan(s).any():
        s = np.where(np.isnan(s), np.float32(0.0), s)
    # OpenCV thresholds: one pass each, ~7x faster than a numpy isfinite/where chain at 1242x375.
    s = cv2.threshold(s, 0.0, 0.0, cv2.THRESH_TOZERO)[1]  # <= 0 and -inf -> 0
    return cv2.threshold(s, _FLOAT32_MAX, 0.0, cv2.THRESH_TOZERO_INV)[1]  # +inf -> 0
