"""KITTI Depth Completion reader (official layout) as a torch Dataset.

Layouts (``root`` = the folder holding the unpacked KITTI DC archives):
    data_depth_velodyne/{train,val}/<drive>/proj_depth/velodyne_raw/image_0{2,3}/<frame>.png   (sparse)
    data_depth_annotated/{train,val}/<drive>/proj_depth/groundtruth/image_0{2,3}/<frame>.png    (ground truth)
    <raw_root>/<date>/<drive>/image_0{2,3}/data/<frame>.png, <raw_root>/<date>/calib_cam_to_cam.txt  (RGB, K)
    depth_selection/val_selection_cropped/{image,velodyne_raw,groundtruth_depth,intrinsics}/
        <drive>_{image,velodyne_raw,groundtruth_depth,image}_<frame>_image_0{2,3}.{png,txt}
Depth PNGs are uint16, metres = value / 256 (`core.units.kitti_png_to_metres`), 0 = no data.
Frames with a missing file are skipped at indexing time and counted (`skipped`, logged); a file that exists
but is unreadable, a size mismatch or an empty ground truth raises `DataError` naming the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from depth_completion_ros.core.calibration import parse_kitti_calib_file
from depth_completion_ros.core.errors import CalibrationError, DataError
from depth_completion_ros.core.files import read_image
from depth_completion_ros.core.units import kitti_png_to_metres
from depth_completion_ros.data.augment import AugmentConfig, Frame, augment, bottom_crop, check_frame, to_sample

__all__ = [
    "KITTI_CROP",
    "KittiDepthCompletion",
    "KittiRecord",
    "load_shared_frame",
    "read_depth_png",
    "read_p_rect",
    "read_rgb_png",
]

_LOG = logging.getLogger(__name__)

KITTI_CROP = (352, 1216)
"""(height, width) of KITTI's bottom-centre crop (val_selection_cropped, the benchmark)."""


@dataclass(frozen=True)
class KittiRecord:
    """Paths of one frame.  `K_source` is a calib_cam_to_cam.txt or a 3x3 intrinsics .txt (None = unknown)."""

    id: str
    rgb: Path
    sparse: Path
    gt: Path | None
    K_source: Path | None
    camera: str  # "image_02" | "image_03"


def read_rgb_png(path: Path) -> np.ndarray:
    """RGB image file -> (H, W, 3) uint8 RGB.  Raises DataError if unreadable, ShapeError if too large."""
    return cv2.cvtColor(read_image(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_depth_png(path: Path) -> np.ndarray:
    """KITTI uint16 depth PNG -> (H, W) float32 metres, 0 = no data.  Raises DataError if unreadable/not uint16."""
    png = read_image(path, cv2.IMREAD_UNCHANGED, what="depth PNG")
    if png.ndim != 2 or png.dtype != np.uint16:
        raise DataError(
            f"depth PNG must be single-channel uint16 (value/256 = metres): {path} is {png.shape} {png.dtype}"
        )
    return kitti_png_to_metres(png)


def read_p_rect(calib_cam_to_cam: Path, camera: str = "image_02") -> np.ndarray:
    """(3, 3) float64 intrinsics of the rectified camera (left 3x3 of P_rect_0X) from calib_cam_to_cam.txt."""
    key = f"P_rect_{camera[-2:]}"
    values = parse_kitti_calib_file(calib_cam_to_cam)  # the one KITTI calibration parser
    if key not in values or values[key].size != 12:
        raise CalibrationError(f"{calib_cam_to_cam} has no valid {key} (12 numbers)")
    return values[key].reshape(3, 4)[:, :3].copy()


def _read_k(path: Path, camera: str) -> np.ndarray:
    if path.name.startswith("calib_cam_to_cam"):
        return read_p_rect(path, camera)
    try:
        vals = np.array([float(v) for v in path.read_text().split()], dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read intrinsics from {path}: {exc}") from exc
    if vals.size != 9:
        raise CalibrationError(f"{path}: expected 9 numbers (3x3 K), got {vals.size}")
    return vals.reshape(3, 3)


def _index_split(root: Path, raw_root: Path | None, split: str, cameras: tuple[str, ...], require_gt: bool):
    records: list[KittiRecord] = []
    missing: list[str] = []
    velo = root / "data_depth_velodyne" / split
    raw_root = raw_root if raw_root is not None else root / "raw"
    for sparse in sorted(velo.glob("*/proj_depth/velodyne_raw/image_0[23]/*.png")):
        camera = sparse.parent.name
        if camera not in cameras:
            continue
        drive = sparse.parents[3].name
        date = drive[:10]
        gt = root / "data_depth_annotated" / split / drive / "proj_depth" / "groundtruth" / camera / sparse.name
        rgb = raw_root / date / drive / camera / "data" / sparse.name
        calib = raw_root / date / "calib_cam_to_cam.txt"
        fid = f"{drive}/{camera}/{sparse.stem}"
        lacking = [p for p in (rgb, gt if require_gt else None) if p is not None and not p.is_file()]
        if lacking:
            missing.append(f"{fid}: missing {', '.join(str(p) for p in lacking)}")
            continue
        records.append(
            KittiRecord(fid, rgb, sparse, gt if gt.is_file() else None, calib if calib.is_file() else None, camera)
        )
    return records, missing


def _index_selection(root: Path, cameras: tuple[str, ...], require_gt: bool):
    records: list[KittiRecord] = []
    missing: list[str] = []
    sel = root / "depth_selection" / "val_selection_cropped"
    for rgb in sorted((sel / "image").glob("*_image_*_image_0[23].png")):
        camera = rgb.stem[-8:]
        if camera not in cameras:
            continue
        sparse = sel / "velodyne_raw" / rgb.name.replace("_image_", "_velodyne_raw_", 1)
        gt = sel / "groundtruth_depth" / rgb.name.replace("_image_", "_groundtruth_depth_", 1)
        intr = sel / "intrinsics" / (rgb.stem + ".txt")
        fid = f"val_selection_cropped/{rgb.stem}"
        lacking = [p for p in (sparse, gt if require_gt else None) if p is not None and not p.is_file()]
        if lacking:
            missing.append(f"{fid}: missing {', '.join(str(p) for p in lacking)}")
            continue
        records.append(
            KittiRecord(fid, rgb, sparse, gt if gt.is_file() else None, intr if intr.is_file() else None, camera)
        )
    return records, missing


class KittiDepthCompletion(torch.utils.data.Dataset):
    """KITTI Depth Completion frames as `augment.to_sample` dicts.

    Args:
        root: folder with data_depth_velodyne/, data_depth_annotated/ and/or depth_selection/.
        split: "train", "val" (official layout) or "val_selection_cropped".
        raw_root: KITTI raw drives (<date>/<drive>_sync/...); default ``root / "raw"``.
        cameras: which of "image_02", "image_03" to use.
        augment_cfg: random crop / flip / jitter for training; None = no augmentation.
        eval_crop: (height, width) deterministic bottom-centre crop applied before augmentation (None = off).
        require_gt: skip frames without ground truth (True for training and evaluation).
        limit: keep only the first `limit` frames (after sorting), None = all.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        raw_root: str | Path | None = None,
        cameras: tuple[str, ...] = ("image_02", "image_03"),
        augment_cfg: AugmentConfig | None = None,
        eval_crop: tuple[int, int] | None = None,
        require_gt: bool = True,
        limit: int | None = None,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        if split not in ("train", "val", "val_selection_cropped"):
            raise DataError(f"KITTI split must be train, val or val_selection_cropped, got {split!r}")
        if split == "val_selection_cropped":
            records, missing = _index_selection(self.root, cameras, require_gt)
        else:
            records, missing = _index_split(
                self.root, Path(raw_root) if raw_root is not None else None, split, cameras, require_gt
            )
        self.skipped = len(missing)
        self.skipped_reasons = missing
        if missing:
            _LOG.warning(
                "KITTI %s: skipped %d frame(s) with missing files (first: %s)", split, len(missing), missing[0]
            )
        if limit is not None:
            records = records[:limit]
        if not records:
            raise DataError(f"no usable KITTI {split} frames under {self.root} ({len(missing)} skipped)")
        self.records = records
        self.split = split
        self.augment_cfg = augment_cfg
        self.eval_crop = eval_crop
        self.seed = seed
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call once per epoch)."""
        self._epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def frame(self, index: int) -> Frame:
        """The un-augmented (but eval-cropped) frame `index` as numpy arrays."""
        r = self.records[index]
        rgb = read_rgb_png(r.rgb)
        sparse = read_depth_png(r.sparse)
        gt = read_depth_png(r.gt) if r.gt is not None else np.zeros_like(sparse)
        if r.gt is not None and not (gt > 0).any():
            raise DataError(f"{r.id}: ground truth is empty (no pixel > 0) in {r.gt}")
        K = _read_k(r.K_source, r.camera) if r.K_source is not None else _guess_k(rgb.shape)
        f = check_frame(Frame(rgb=rgb, sparse=sparse, gt=gt, K=K, id=r.id))
        if self.eval_crop is not None:
            f = bottom_crop(f, *self.eval_crop)
        return f

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.records):
            raise IndexError(index)
        f = self.frame(index)
        if self.augment_cfg is not None:
            f = augment(f, self.augment_cfg, np.random.default_rng([self.seed, index, self._epoch]))
        return to_sample(f)


def _guess_k(shape: tuple[int, ...]) -> np.ndarray:
    """KITTI-typical intrinsics when no calibration file is available (f = 721.5 px, bottom-centre crop aware)."""
    h, w = shape[:2]
    return np.array([[721.5377, 0.0, w / 2.0 - 11.5], [0.0, 721.5377, h - 202.146], [0.0, 0.0, 1.0]])


def load_shared_frame(kitti_dc_dir: str | Path, camera: str = "image_02") -> Frame:
    """The shared full-size KITTI DC frame (../shared/data/kitti_dc_frame) for camera image_02 or image_03.

    RGB from raw/sync_rect/cam_0X.png, sparse velodyne_raw_image_0X.png, ground truth groundtruth_image_0X.png,
    K from P_rect_0X of raw/calib_cam_to_cam.txt (not intrinsics.txt, which belongs to the 1216x352 crop).
    """
    d = Path(kitti_dc_dir)
    n = camera[-2:]
    if n not in ("02", "03"):
        raise DataError(f"camera must be image_02 or image_03, got {camera!r}")
    dc = d / "depth_completion"
    rgb = read_rgb_png(d / "raw" / "sync_rect" / f"cam_{n}.png")
    sparse = read_depth_png(dc / f"velodyne_raw_image_{n}.png")
    gt = read_depth_png(dc / f"groundtruth_image_{n}.png")
    K = read_p_rect(d / "raw" / "calib_cam_to_cam.txt", camera)
    return check_frame(Frame(rgb=rgb, sparse=sparse, gt=gt, K=K, id=f"kitti_dc_frame/{camera}"))
