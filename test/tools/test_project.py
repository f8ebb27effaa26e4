"""`depth-completion project`: writes a sparse depth PNG that decodes to the projection."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from depth_completion_ros.cli import main
from depth_completion_ros.core.units import kitti_png_to_metres


def test_project_synthetic(tmp_path: Path) -> None:
    assert main(["project", "--synthetic", "--out", str(tmp_path)]) == 0
    png = cv2.imread(str(tmp_path / "sparse_depth.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16
    depth = kitti_png_to_metres(png)
    assert 0.005 < np.mean(depth > 0) < 0.5
    preview = cv2.imread(str(tmp_path / "sparse_preview.png"))
    assert preview.shape == (*png.shape, 3)


def test_project_kitti_matches_velodyne_raw(kitti_dc_dir: Path, tmp_path: Path) -> None:
    assert main(["project", "--kitti-dir", str(kitti_dc_dir), "--out", str(tmp_path)]) == 0
    ours = kitti_png_to_metres(cv2.imread(str(tmp_path / "sparse_depth.png"), cv2.IMREAD_UNCHANGED))
    ref = kitti_png_to_metres(cv2.imread(str(kitti_dc_dir / "depth_completion/velodyne_raw_image_02.png"), -1))
    both = (ours > 0) & (ref > 0)
    assert both.sum() > 0.8 * (ref > 0).sum()
    assert np.median(np.abs(ours[both] - ref[both])) < 0.05


def test_project_missing_dir_is_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["project", "--kitti-dir", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
