"""One completion API: `DepthCompleter(config).complete(rgb, sparse_depth, camera) -> (depth, confidence)`.

Methods: "default" (weight-free: classical fill + RGB-affinity CSPN, CPU), "cspn" (the learned model from a
safetensors checkpoint) and the published models ("penet", "enet", "cspn-nyu": our implementations in
`core/published/`, with the authors' weights imported by `depth-completion import-weights`).  The device is chosen
once, at construction.  The weight-free default never imports torch (fast start, small memory).
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numba
import numpy as np

from .affinity import anchored_pair_affinity, colour_sigma
from .confidence import default_confidence, edge_window, network_confidence
from .device import resolve_device
from .errors import CalibrationError, CheckpointError, DataError, ShapeError
from .fill import OUTLIER_TOLERANCE, classical_fill_detailed, sparse_stats
from .lazy import lazy_module
from .propagation import MAX_ITERATIONS, cspn_propagate_pairs

if TYPE_CHECKING:
    import torch

    from .camera import CameraModel
    from .published import Architecture
else:
    torch = lazy_module("torch", globals())  # imported by the learned methods only

__all__ = ["CompleterConfig", "DepthCompleter"]


@dataclass(frozen=True, kw_only=True)
class CompleterConfig:
    """Configuration of `DepthCompleter`.

    Attributes:
        method: "default" (weight-free), "cspn" (learned, needs `checkpoint`) or a published model: "penet",
            "enet", "cspn-nyu" (needs a `checkpoint` written by `depth-completion import-weights`; PENet and ENet
            also need the camera model at `complete`).
        checkpoint: safetensors checkpoint for the learned methods.
        device: "auto" (CUDA when available), "cpu" or "cuda" (learned methods; the default runs on the CPU).
        iterations: CSPN iterations of the default method (the learned model runs its checkpoint's count;
            `DepthCompleter.reconfigure(iterations=...)` changes either at run time).
        max_depth: output clipped to (0, max_depth] metres.
        colour_sigma_scale: affinity colour-kernel width, in units of the image's median colour step.
        anchor: weight of the initial fill in the propagation (affinities normalised by sum + anchor).
        outlier_tolerance: relative tolerance of the outlier rejection (sparse inputs only); 0 = off.
        fill_blur: gaussian sigma of the initial fill, in units of the measurement spacing.
        allow_random_weights: a learned method without checkpoint uses random weights (benchmarks only).
        fp16: published models on CUDA run under float16 autocast (faster; output differs from float32).
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
    fp16: bool = False
    num_threads: int = 1
    bands: int = 2


class DepthCompleter:
    """Dense depth + confidence from RGB + sparse depth."""

    def __init__(self, config: CompleterConfig | None = None) -> None:
        """Build the completer; loads the checkpoint of a learned method.

        Raises:
            CheckpointError: a learned method without a usable checkpoint (and not `allow_random_weights`), or a
                published-model checkpoint of another architecture than `method`.
            ValueError: unknown method or device.
        """
        self.config = config or CompleterConfig()
        cfg = self.config
        self._arch: Architecture | None = None
        if cfg.method not in ("default", "cspn"):
            from .published import get_architecture

            try:
                self._arch = get_architecture(cfg.method)
            except ValueError as exc:
                raise ValueError(f"method must be 'default', 'cspn' or a published model ({exc})") from None
        if not 0 <= cfg.iterations <= MAX_ITERATIONS:
            raise ValueError(f"iterations must be in 0..{MAX_ITERATIONS} (work per frame), got {cfg.iterations}")
        if cfg.bands < 1:
            raise ValueError(f"bands must be >= 1, got {cfg.bands}")
        # The weight-free default is OpenCV + a few CPU propagation steps (numpy / numba, no torch): moving it to
        # a GPU costs more in transfers than it saves, so only the learned models follow `device`.
        self._device: torch.device | None = None
        if cfg.method != "default":
            if cfg.num_threads > 0:
                torch.set_num_threads(cfg.num_threads)
            self._device = resolve_device(cfg.device)
        self._model: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._model_name = "ip-basic-family fill + rgb-affinity cspn (weight-free)"
        if cfg.method == "cspn":
            self._load_model()
        elif self._arch is not None:
            self._load_published(self._arch)
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

    def _load_published(self, arch: Architecture) -> None:
        cfg = self.config
        if cfg.checkpoint is None:
            if not cfg.allow_random_weights:
                raise CheckpointError(
                    f"method {cfg.method!r} needs a checkpoint: import the authors' weights with "
                    f"`depth-completion import-weights --format {cfg.method} SRC --out X.safetensors`"
                )
            self._model = self._prepared(arch, arch.build(arch.default_config).to(self._device).eval())
            self._model_name = f"{arch.name} (random weights)"
            return
        from .published.importer import load_published, read_published_metadata

        path = Path(cfg.checkpoint)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        stored, _, _, _ = read_published_metadata(path)
        if stored.name != arch.name:
            raise CheckpointError(f"{path} holds a {stored.name!r} model, not {arch.name!r} (method)")
        try:
            model, _, _, meta = load_published(path, map_location=self._device)
        except CheckpointError:
            raise
        except Exception as exc:  # any unreadable file becomes one clear error
            raise CheckpointError(f"cannot load checkpoint {path}: {exc}") from exc
        self._model = self._prepared(arch, model)
        source = meta.get("source") if isinstance(meta, dict) else None
        self._model_name = f"{arch.name} ({source or path.name})"

    @staticmethod
    def _prepared(arch: Architecture, model: Any) -> Any:
        """The architecture's inference preparation (e.g. PENet's fused conv+BN, oneDNN and Winograd on the CPU)."""
        if arch.prepare is None:
            return model
        with torch.no_grad():
            return arch.prepare(model)

    @property
    def iterations(self) -> int:
        """CSPN propagation steps per frame (the learned model's, for method "cspn")."""
        if self._model is not None:
            return int(getattr(self._model.config, "iterations", 0))  # ENet: no propagation
        return int(self.config.iterations)

    def reconfigure(self, *, iterations: int | None = None, max_depth: float | None = None) -> None:
        """Apply run-time changes in memory (nothing is reloaded; the model in use is kept).

        Args:
            iterations: propagation steps, 0..`propagation.MAX_ITERATIONS` (method "cspn": the learned model's).
            max_depth: output clip, metres (> 0, finite).

        Raises:
            ValueError: a value out of range (nothing is changed).
        """
        changes: dict[str, Any] = {}
        if iterations is not None:
            if isinstance(iterations, bool) or not isinstance(iterations, int) or not 0 <= iterations <= MAX_ITERATIONS:
                raise ValueError(f"iterations must be an integer in 0..{MAX_ITERATIONS}, got {iterations!r}")
            changes["iterations"] = iterations
        if max_depth is not None:
            if not (isinstance(max_depth, (int, float)) and math.isfinite(max_depth) and max_depth > 0):
                raise ValueError(f"max_depth must be a finite number of metres > 0, got {max_depth!r}")
            changes["max_depth"] = float(max_depth)
        model_config = None
        if self._model is not None and iterations is not None:
            current = self._model.config
            if not hasattr(current, "iterations"):
                raise ValueError(f"method {self.config.method!r} has no propagation iterations to change")
            model_config = type(current).from_dict({**current.to_dict(), "iterations": iterations})  # its bounds
        if model_config is not None:
            self._model.config = model_config
        self.config = replace(self.config, **changes)

    @property
    def device(self) -> torch.device:
        """Device the completer runs on (the default method always runs on the CPU; asking imports torch)."""
        return self._device if self._device is not None else torch.device("cpu")

    @property
    def device_name(self) -> str:
        """The device as text ("cpu", "cuda", "cuda:1"), without importing torch for the default method."""
        return str(self._device) if self._device is not None else "cpu"

    @property
    def method(self) -> str:
        """ "default", "cspn" or a published model name."""
        return self.config.method

    @property
    def needs_camera(self) -> bool:
        """True when `complete` needs the camera model (published models that use the intrinsics)."""
        return self._arch is not None and self._arch.needs_intrinsics

    @property
    def model_name(self) -> str:
        """Human-readable name of the model / algorithm."""
        return self._model_name

    def complete(
        self, rgb: np.ndarray, sparse_depth: np.ndarray, camera: CameraModel | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Complete `sparse_depth` guided by `rgb`.

        Args:
            rgb: (H, W, 3) uint8 RGB.
            sparse_depth: (H, W) float32 metres along the optical axis, 0 = missing (NaN, inf and values above
                `max_depth` = missing).
            camera: the camera model of these H x W images (its `projection_matrix` gives K); needed by the
                published models that use the intrinsics (`needs_camera`: penet, enet), passed to the other
                published models that can use it (cspn-nyu scales its input to its training focal length),
                ignored by "default" and "cspn".

        Returns:
            depth (H, W) float32 metres (> 0), confidence (H, W) float32 in [0, 1].

        Raises:
            ShapeError: wrong shapes / dtypes, sizes that differ, or an empty (0-pixel) image.
            DataError: no valid measurement in `sparse_depth`.
            CalibrationError: `camera` missing where needed, or made for another image size.
        """
        rgb_a, sparse = _validate(rgb, sparse_depth, self.config.max_depth)
        if self.config.method == "default":
            return self._complete_default(rgb_a, sparse)
        K = None  # nets that may use K (cspn-nyu: input scale from the focal length) get it whenever it is known
        if self._arch is not None and (camera is not None or self._arch.needs_intrinsics):
            K = _intrinsics(camera, rgb_a.shape[1], rgb_a.shape[0], self.config.method)

        def run() -> tuple[np.ndarray, np.ndarray]:
            if self._arch is None:
                return self._complete_cspn(rgb_a, sparse)
            return self._complete_published(rgb_a, sparse, K)

        try:
            return run()
        except torch.cuda.OutOfMemoryError:
            if self.device.type != "cuda":
                raise
            # Out of GPU memory: fall back to the CPU for good (a robot keeps running, slower).
            warnings.warn("CUDA out of memory; the learned model falls back to the CPU", RuntimeWarning, stacklevel=2)
            torch.cuda.empty_cache()
            self._device = torch.device("cpu")
            self._model = self._model.to(self._device)
            return run()

    def _complete_default(self, rgb: np.ndarray, sparse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fill, RGB affinities, CSPN and confidence, in row bands on parallel threads.

        A band is computed over its rows plus `halo` rows on each side and keeps its own rows: a propagation step
        reaches one row further (a band edge, seen as an image border, is wrong after n steps for n rows), and the
        confidence looks `edge_window // 2` rows further; the fill of a band equals the whole image's
        (`classical_fill_detailed(rows=...)`).  So the result does not depend on the number of bands.  (A second band
        pays off only with a free core: on a loaded 2-core machine one band was faster, see benchmarks/README.md.)

        Affinities and propagation run only on the rows the sensor covers (`_covered_rows`: the measured rows and a
        margin; all rows for dense sensors); beyond them (a LiDAR's sky, ~30 % of a KITTI frame) the depth is the
        fill, whose nearest measurements lie far below or above anyway; above them, the fill of the first covered row
        (`classical_fill_detailed(extend_above=...)`).
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
        points_per_row = _points_per_row(sparse)
        cov0, cov1 = _covered_rows(points_per_row, halo + int(np.ceil(_COVER_SPACINGS * stats.spacing)))
        cuts = _balanced_cuts(points_per_row, w, bands, min_rows=2 * halo, covered=(cov0, cov1))
        depth = np.empty((h, w), np.float32) if bands > 1 else None
        conf = np.empty((h, w), np.float32) if bands > 1 else None

        def run(i: int) -> None:
            nonlocal depth, conf
            r0, r1 = cuts[i], cuts[i + 1]
            c0, c1 = max(0, r0 - halo), min(h, r1 + halo)
            fr = classical_fill_detailed(sparse, rows=(c0, c1), stats=stats, extend_above=cov0, **fill_args)
            p0, p1 = max(c0, cov0), min(c1, cov1)  # rows propagated (the covered ones): every band cuts them alike
            s = sigma.result()
            if (p0, p1) == (c0, c1):
                aff = anchored_pair_affinity(rgb[c0:c1], anchor=cfg.anchor, sigma=s, sigma_scale=cfg.colour_sigma_scale)
                d = cspn_propagate_pairs(  # a fresh array: clipped in place
                    fr.depth, aff.pairs, aff.inv_norm, anchor=aff.anchor, iterations=cfg.iterations, sparse=fr.anchors
                )
            else:
                d = np.empty_like(fr.depth)  # the fill outside the propagated rows
                d[: max(0, p0 - c0)] = fr.depth[: max(0, p0 - c0)]
                d[max(0, p1 - c0) :] = fr.depth[max(0, p1 - c0) :]
                if p0 < p1:
                    aff = anchored_pair_affinity(
                        rgb[p0:p1], anchor=cfg.anchor, sigma=s, sigma_scale=cfg.colour_sigma_scale
                    )
                    cspn_propagate_pairs(
                        fr.depth[p0 - c0 : p1 - c0],
                        aff.pairs,
                        aff.inv_norm,
                        anchor=aff.anchor,
                        iterations=cfg.iterations,
                        sparse=fr.anchors[p0 - c0 : p1 - c0],
                        out=d[p0 - c0 : p1 - c0],
                    )
            _clip_in_place(d, np.float32(1e-3), np.float32(cfg.max_depth))
            c = default_confidence(d, fr.depth, fr.anchors > 0, stats.spacing, distance=fr.distance)
            if depth is None:  # one band: its arrays are the result
                depth, conf = d, c
                return
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

    def _complete_published(
        self, rgb: np.ndarray, sparse: np.ndarray, K: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the published net (its own normalization, padding and input scale: see `published.base`)."""
        dev = self.device
        with torch.inference_mode():
            x = torch.from_numpy(rgb).to(dev).permute(2, 0, 1)[None].float()  # [0, 255]
            s = torch.from_numpy(sparse).to(dev)[None, None]
            k = None if K is None else torch.from_numpy(K).to(dev)[None]
            half = dev.type == "cuda" and self.config.fp16
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=half):
                out = self._model(x, s, k)
            depth = out["pred"].float()[0, 0].cpu().numpy()
            conf = out.get("confidence")
            conf = None if conf is None else conf.float()[0, 0].cpu().numpy()
        depth = np.clip(np.nan_to_num(depth, nan=0.0), np.float32(1e-3), np.float32(self.config.max_depth))
        depth = depth.astype(np.float32, copy=False)
        if conf is None:  # no confidence head: the documented heuristic of `network_confidence`
            return depth, network_confidence(depth, sparse, sparse_stats(sparse).spacing)
        return depth, np.clip(np.nan_to_num(conf, nan=0.0), 0.0, 1.0).astype(np.float32)

    def _complete_cspn(self, rgb: np.ndarray, sparse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dev = self.device
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


_COVER_SPACINGS = 4.0
"""Rows propagated beyond the first and last measured rows, in measurement spacings (plus the band halo): KITTI's
ground truth starts up to ~3 spacings above the 16-beam input's top row (the 64-beam input's top row is within a
spacing of it)."""


def _covered_rows(points_per_row: np.ndarray, margin: int) -> tuple[int, int]:
    """Rows [r0, r1) from `margin` rows above the first row with a measurement to `margin` below the last one."""
    rows = np.flatnonzero(points_per_row)
    h = len(points_per_row)
    if rows.size == 0:
        return 0, h
    return max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + 1 + margin)


_POINT_COST_PX = 6.0
"""Measured cost of one sparse measurement in the banded default (the fill's nearest fill, outlier rejection and
surfaces, cropped to the rows with measurements), in pixels of the per-pixel work (fill, affinity, propagation,
confidence): with it (and `_UNCOVERED_ROW_COST`) the two bands' CPU times on the 1242×375 KITTI frames differ by
~2 %."""

_UNCOVERED_ROW_COST = 0.2
"""Cost of a row outside the covered ones (fill extension, blur, confidence: no nearest fill, affinity or propagation)
as a fraction of a covered row's per-pixel work (estimated from the stage costs at 1242×375)."""

_COLOUR_SIGMA_COST = 0.11
"""Cost of `colour_sigma` (computed by the first band's thread before its band) as a fraction of the whole image's
per-pixel work: ~0.08 alone, more while the other band runs (memory-bound); 0.11 ended both bands together in
1242×375 KITTI timelines (0.08: the first band ~1.5 ms later, 0.15: ~2 ms earlier)."""


def _balanced_cuts(
    points_per_row: np.ndarray, width: int, bands: int, *, min_rows: int, covered: tuple[int, int] | None = None
) -> list[int]:
    """Row cuts (0 = c_0 < ... < c_bands = H) giving the bands about equal estimated work: `width` per row
    (`_UNCOVERED_ROW_COST` of it outside the `covered` rows) plus `_POINT_COST_PX` per measurement, the first band
    also carrying the colour scale.  Every band gets at least `min_rows` rows (when H allows); the result does not
    depend on the cuts, only the timing does."""
    h = len(points_per_row)
    if bands <= 1:
        return [0, h]
    per_row = np.full(h, float(width))
    if covered is not None:
        per_row[: covered[0]] *= _UNCOVERED_ROW_COST
        per_row[covered[1] :] *= _UNCOVERED_ROW_COST
    cost = np.cumsum(per_row + _POINT_COST_PX * points_per_row.astype(np.float64))
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


def _intrinsics(camera: CameraModel | None, width: int, height: int, method: str) -> np.ndarray:
    """(3, 3) float32 K of the W x H image from `camera` (its projection matrix: P for rectified images)."""
    if camera is None:
        raise CalibrationError(
            f"method {method!r} needs the camera intrinsics: pass camera=CameraModel(...) to complete() "
            "(CLI: --intrinsics fx,fy,cx,cy or --camera-info FILE; node: the rgb/camera_info topic)"
        )
    if tuple(camera.image_size) != (width, height):
        cw, ch = camera.image_size
        raise CalibrationError(f"the camera model is for {cw}x{ch} images, the input is {width}x{height}")
    return np.ascontiguousarray(camera.projection_matrix[:, :3], dtype=np.float32)


def _validate(rgb: np.ndarray, sparse_depth: np.ndarray, max_depth: float) -> tuple[np.ndarray, np.ndarray]:
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
    if s.size == 0:
        raise ShapeError(f"sparse_depth: empty image {s.shape}")
    s = _clean_depth(np.ascontiguousarray(s, dtype=np.float32), max_depth)
    if cv2.countNonZero(s) == 0:  # (after the cleaning, nonzero = a measurement)
        raise DataError("sparse_depth has no valid measurement")
    return np.ascontiguousarray(r), s


def _clean_depth(s: np.ndarray, max_depth: float) -> np.ndarray:
    """A copy of (H, W) float32 `s` with NaN, ±inf, values <= 0 and values > `max_depth` set to 0 (missing).

    A measurement beyond `max_depth` cannot be output (the output is clipped there); kept, one absurd value
    (1e30 m) overflows the fill and the propagation and spreads over the whole image."""
    out = np.empty_like(s)
    _clean_kernel(s, out, np.float32(min(max_depth, float(np.finfo(np.float32).max))))
    return out


@numba.njit(cache=True, nogil=True)
def _clean_kernel(s: np.ndarray, out: np.ndarray, hi: np.float32) -> None:  # pragma: no cover - compiled
    """out = s where 0 < s <= hi (finite), else 0 (NaN compares false), in one pass."""
    h, w = s.shape
    zero = np.float32(0.0)
    for y in range(h):
        for x in range(w):
            v = s[y, x]
            out[y, x] = v if v > zero and v <= hi else zero


@numba.njit(cache=True, nogil=True)
def _points_per_row(s: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """(H,) int64 count of the pixels > 0 in each row of (H, W) `s` (one pass, no mask array)."""
    h, w = s.shape
    out = np.zeros(h, np.int64)
    for y in range(h):
        r = s[y]
        n = 0
        for x in range(w):
            n += r[x] > 0
        out[y] = n
    return out


@numba.njit(cache=True, nogil=True)
def _clip_in_place(a: np.ndarray, lo: np.float32, hi: np.float32) -> None:  # pragma: no cover - compiled
    """a = min(max(a, lo), hi), in place (numpy's clip is ~5x slower at 1242×375)."""
    h, w = a.shape
    for y in range(h):
        for x in range(w):
            a[y, x] = min(max(a[y, x], lo), hi)
