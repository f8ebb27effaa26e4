"""NYUv2-style RGB-D reader with sparse sampling modes for ToF / structured-light training.

Layouts under ``root`` (searched recursively):
    - ``rgb/<name>.{png,jpg}`` next to ``depth/<name>.png`` (same stem);
    - pairs ``<name>_rgb.{png,jpg}`` / ``<name>_colors.png`` with ``<name>_depth.png``;
    - ``*.h5`` files with datasets ``rgb`` (3, H, W) uint8 and ``depth`` (H, W) float metres
      (the sparse-to-dense NYU export), read only if h5py is installed.
Depth PNGs are uint16 with metres = value / `depth_scale` (1000 = millimetres, `units.TUM_PNG_SCALE` = TUM).
The ground truth is the sensor depth itself (its holes stay 0); the network input is sampled from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from depth_completion_ros.core.errors import DataError
from depth_completion_ros.core.files import read_image
from depth_completion_ros.core.units import MM_PER_M, kitti_png_to_metres
from depth_completion_ros.data.augment import AugmentConfig, Frame, augment, check_frame, to_sample
from depth_completion_ros.data.synthetic import tof_spot_depth

__all__ = [
    "NYU_K",
    "RGBDDataset",
    "SparseSamplingConfig",
    "find_pairs",
    "sample_sparse",
]

_LOG = logging.getLogger(__name__)

NYU_K = np.array([[518.8579, 0.0, 325.5824], [0.0, 519.4696, 253.7362], [0.0, 0.0, 1.0]])
"""Intrinsics of the NYU Depth v2 Kinect colour camera (640x480), from the NYU toolbox."""

_MODES = ("random", "tof", "structured_light")


@dataclass(frozen=True, kw_only=True)
class SparseSamplingConfig:
    """How the network input is drawn from dense sensor depth.

    Attributes:
        mode: "random" (`num_points` uniformly among valid pixels), "tof" (regular spot grid every `spacing`
            px with `rel_noise` relative noise and `dropout`), "structured_light" (the depth with holes:
            dark, specular and depth-edge dropouts plus random blobs, and `rel_noise`).
        num_points: random mode.
        spacing, jitter_px: tof mode.
        rel_noise: relative range noise (tof, structured_light).
        dropout: random spot dropout probability (tof).
        dark_threshold, specular_threshold: grey levels (0-255) below / above which structured light fails.
        edge_threshold: relative depth jump that counts as an edge (dropped with a 2 px band).
        blob_fraction: rough fraction of the image removed by random blobs (structured_light).
        max_range: metres; no return beyond it (tof, structured_light).
    """

    mode: str = "random"
    num_points: int = 500
    spacing: int = 8
    jitter_px: float = 0.5
    rel_noise: float = 0.01
    dropout: float = 0.05
    dark_threshold: float = 25.0
    specular_threshold: float = 245.0
    edge_threshold: float = 0.05
    blob_fraction: float = 0.03
    max_range: float = 8.0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise DataError(f"sampling mode must be one of {_MODES}, got {self.mode!r}")


def sample_sparse(
    depth: np.ndarray, rgb: np.ndarray, cfg: SparseSamplingConfig, rng: np.random.Generator
) -> np.ndarray:
    """Sparse input (H, W) float32 metres (0 = none) drawn from dense depth (H, W) metres and RGB (H, W, 3) uint8."""
    depth = np.asarray(depth, dtype=np.float32)
    valid = depth > 0
    if cfg.mode == "random":
        idx = np.flatnonzero(valid)
        out = np.zeros_like(depth)
        if idx.size:
            pick = rng.choice(idx, size=min(cfg.num_points, idx.size), replace=False)
            out.flat[pick] = depth.flat[pick]
        return out
    if cfg.mode == "tof":
        return tof_spot_depth(
            depth,
            rng,
            spacing=cfg.spacing,
            jitter_px=cfg.jitter_px,
            rel_noise=cfg.rel_noise,
            dropout=cfg.dropout,
            max_range=cfg.max_range,
        )
    # structured light: holes where the projector pattern is not seen
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    keep = valid & (depth <= cfg.max_range)
    keep &= grey >= cfg.dark_threshold  # dark / absorbing surfaces
    keep &= grey <= cfg.specular_threshold  # specular highlights
    d = np.where(valid, depth, 0)
    big = np.maximum(d, 1e-3)
    jump = np.zeros_like(depth, dtype=bool)
    jump[:, 1:] |= np.abs(np.diff(d, axis=1)) > cfg.edge_threshold * big[:, 1:]
    jump[1:, :] |= np.abs(np.diff(d, axis=0)) > cfg.edge_threshold * big[1:, :]
    keep &= ~(cv2.dilate(jump.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)  # occlusion shadows at edges
    h, w = depth.shape
    n_blobs = max(1, round(cfg.blob_fraction * h * w / (np.pi * (0.03 * min(h, w)) ** 2)))
    blobs = np.zeros((h, w), np.uint8)
    for _ in range(n_blobs if cfg.blob_fraction > 0 else 0):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        ax = (int(rng.uniform(0.01, 0.05) * min(h, w)) + 1, int(rng.uniform(0.01, 0.05) * min(h, w)) + 1)
        cv2.ellipse(blobs, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    keep &= blobs == 0
    noise = (1.0 + rng.normal(0, cfg.rel_noise, depth.shape)).astype(np.float32)
    return np.where(keep, depth * noise, 0).astype(np.float32)


def find_pairs(root: str | Path) -> tuple[list[tuple[str, Path, Path | None]], list[str]]:
    """(id, rgb path, depth path or None for h5) of every frame under `root`, and the unpaired files."""
    root = Path(root)
    pairs: list[tuple[str, Path, Path | None]] = []
    missing: list[str] = []
    for rgb_dir in sorted(p for p in root.rglob("rgb") if p.is_dir()):
        depth_dir = rgb_dir.parent / "depth"
        for rgb in sorted([*rgb_dir.glob("*.png"), *rgb_dir.glob("*.jpg")]):
            dpath = depth_dir / (rgb.stem + ".png")
            fid = str(rgb.relative_to(root).with_suffix(""))
            if dpath.is_file():
                pairs.append((fid, rgb, dpath))
            else:
                missing.append(f"{fid}: missing {dpath}")
    for suffix in ("_rgb", "_colors"):
        for rgb in sorted([*root.rglob(f"*{suffix}.png"), *root.rglob(f"*{suffix}.jpg")]):
            if rgb.parent.name == "rgb":
                continue
            stem = rgb.stem[: -len(suffix)]
            dpath = rgb.with_name(stem + "_depth.png")
            fid = str(rgb.relative_to(root).with_name(stem))
            if dpath.is_file():
                pairs.append((fid, rgb, dpath))
            else:
                missing.append(f"{fid}: missing {dpath}")
    pairs.extend((str(h5.relative_to(root).with_suffix("")), h5, None) for h5 in sorted(root.rglob("*.h5")))
    return pairs, missing


class RGBDDataset(torch.utils.data.Dataset):
    """RGB-D frames as `augment.to_sample` dicts; `sparse` is sampled per `sampling`, `gt` is the sensor depth.

    Args:
        root: directory searched by `find_pairs`.
        sampling: sparse sampling mode.
        depth_scale: PNG value per metre (1000 = mm).
        K: (3, 3) intrinsics (default NYU_K).
        augment_cfg: random crop / flip / jitter; None = none.
        limit: first `limit` frames only.
        seed: base seed of the sampling / augmentation generators.
        deterministic: the same sparse input every epoch (validation).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        sampling: SparseSamplingConfig | None = None,
        depth_scale: float = MM_PER_M,
        K: np.ndarray | None = None,
        augment_cfg: AugmentConfig | None = None,
        limit: int | None = None,
        seed: int = 0,
        deterministic: bool = False,
    ) -> None:
        pairs, missing = find_pairs(root)
        self.skipped = len(missing)
        self.skipped_reasons = missing
        if missing:
            _LOG.warning("RGB-D %s: skipped %d frame(s) with missing files (first: %s)", root, len(missing), missing[0])
        if limit is not None:
            pairs = pairs[:limit]
        if not pairs:
            raise DataError(f"no RGB-D frames under {root} ({len(missing)} skipped)")
        self.pairs = pairs
        self.sampling = sampling or SparseSamplingConfig()
        self.depth_scale = float(depth_scale)
        self.K = np.asarray(NYU_K if K is None else K, dtype=np.float64)
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.deterministic = deterministic
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the sampling / augmentation draw (ignored when deterministic)."""
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, index: int) -> tuple[str, np.ndarray, np.ndarray]:
        fid, rgb_path, depth_path = self.pairs[index]
        if depth_path is None:
            return (fid, *_read_h5(rgb_path))
        bgr = read_image(rgb_path, cv2.IMREAD_COLOR)
        png = read_image(depth_path, cv2.IMREAD_UNCHANGED, what="depth PNG")
        if png.ndim != 2 or png.dtype != np.uint16:
            raise DataError(f"depth PNG must be single-channel uint16: {depth_path} is {png.shape} {png.dtype}")
        return fid, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), kitti_png_to_metres(png, self.depth_scale)

    def frame(self, index: int) -> Frame:
        """Frame `index` with its sampled sparse input (before augmentation)."""
        fid, rgb, depth = self._read(index)
        if not (depth > 0).any():
            raise DataError(f"{fid}: ground truth is empty (no pixel > 0)")
        if rgb.shape[:2] != depth.shape:
            check_frame(Frame(rgb=rgb, sparse=depth, gt=depth, K=self.K, id=fid))  # raises the size message
        epoch = 0 if self.deterministic else self._epoch
        rng = np.random.default_rng([self.seed, index, epoch])
        sparse = sample_sparse(depth, rgb, self.sampling, rng)
        return check_frame(Frame(rgb=rgb, sparse=sparse, gt=depth, K=self.K, id=fid))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.pairs):
            raise IndexError(index)
        f = self.frame(index)
        if self.augment_cfg is not None:
            f = augment(f, self.augment_cfg, np.random.default_rng([self.seed, index, self._epoch, 1]))
        return to_sample(f)


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        import h5py
    except ImportError as exc:
        raise DataError(f"{path}: reading .h5 needs h5py (pip install h5py)") from exc
    try:
        with h5py.File(path, "r") as f:
            rgb = np.asarray(f["rgb"])
            depth = np.asarray(f["depth"], dtype=np.float32)
    except (OSError, KeyError) as exc:
        raise DataError(f"corrupt or unreadable h5 (needs 'rgb' and 'depth'): {path}: {exc}") from exc
    if rgb.ndim == 3 and rgb.shape[0] == 3:
        rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
    return rgb.astype(np.uint8), np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
