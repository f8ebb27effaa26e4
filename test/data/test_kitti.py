"""KITTI DC reader on tiny fake trees under tmp_path (built from the shared frame when present, else synthetic)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_completion_ros.core.errors import DataError
from depth_completion_ros.data.augment import AugmentConfig
from depth_completion_ros.data.kitti import KittiDepthCompletion, load_shared_frame, read_p_rect

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kitti_dc_frame"
P_RECT_02 = "7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 0 0 0 1 0"


def _source(h: int = 375, w: int = 1242):
    """(rgb uint8 RGB, sparse uint16, gt uint16) at full KITTI size."""
    if SHARED.is_dir():
        rgb = cv2.cvtColor(cv2.imread(str(SHARED / "raw/sync_rect/cam_02.png")), cv2.COLOR_BGR2RGB)
        sp = cv2.imread(str(SHARED / "depth_completion/velodyne_raw_image_02.png"), -1)
        gt = cv2.imread(str(SHARED / "depth_completion/groundtruth_image_02.png"), -1)
        return rgb, sp, gt
    from depth_completion_ros.data.synthetic import generate_scene

    s = generate_scene(seed=0, width=w, height=h)
    to_png = lambda d: np.clip(np.rint(d * 256), 0, 65535).astype(np.uint16)  # noqa: E731
    return s.rgb, to_png(s.sparse_depth), to_png(np.where(s.depth_gt < 85, s.depth_gt, 0))


def _write(path: Path, img: np.ndarray, rgb: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if rgb else img)


def _official_tree(root: Path, frames: list[tuple[str, str]]) -> None:
    rgb, sp, gt = _source()
    for drive, frame in frames:
        date = drive[:10]
        for cam in ("image_02",):
            _write(root / f"data_depth_velodyne/train/{drive}/proj_depth/velodyne_raw/{cam}/{frame}.png", sp)
            _write(root / f"data_depth_annotated/train/{drive}/proj_depth/groundtruth/{cam}/{frame}.png", gt)
            _write(root / f"raw/{date}/{drive}/{cam}/data/{frame}.png", rgb, rgb=True)
        (root / f"raw/{date}/calib_cam_to_cam.txt").write_text(f"S_rect_02: 1242 375\nP_rect_02: {P_RECT_02}\n")


def test_official_layout_reads_and_skips(tmp_path, caplog):
    drives = [("2011_09_26_drive_0001_sync", "0000000005"), ("2011_09_26_drive_0002_sync", "0000000007")]
    _official_tree(tmp_path, drives)
    (tmp_path / "raw/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000007.png").unlink()
    ds = KittiDepthCompletion(tmp_path, "train", cameras=("image_02",))
    assert len(ds) == 1 and ds.skipped == 1
    assert "2011_09_26_drive_0002_sync/image_02/0000000007" in ds.skipped_reasons[0]
    assert "skipped 1 frame" in caplog.text
    s = ds[0]
    _, sp, gt = _source()
    np.testing.assert_allclose(s["sparse"][0].numpy(), sp / 256.0, rtol=1e-6)
    np.testing.assert_allclose(s["gt"][0].numpy(), gt / 256.0, rtol=1e-6)
    np.testing.assert_allclose(s["K"].numpy(), [[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]], rtol=1e-6)
    assert s["rgb"].shape == (3, 375, 1242) and s["id"] == "2011_09_26_drive_0001_sync/image_02/0000000005"


def test_augmented_crop_moves_principal_point(tmp_path):
    _official_tree(tmp_path, [("2011_09_26_drive_0001_sync", "0000000005")])
    ds = KittiDepthCompletion(tmp_path, "train", augment_cfg=AugmentConfig(crop=(128, 320), hflip=0.0))
    s = ds[0]
    assert s["rgb"].shape == (3, 128, 320)
    full = ds.frame(0)
    # find the crop offset from the principal point and check the depth came from there
    x0 = round(609.5593 - float(s["K"][0, 2]))
    y0 = round(172.854 - float(s["K"][1, 2]))
    np.testing.assert_array_equal(s["gt"][0].numpy(), full.gt[y0 : y0 + 128, x0 : x0 + 320])


def _selection_tree(root: Path) -> None:
    rgb, sp, gt = _source()
    h, w = 352, 1216
    y0, x0 = 375 - h, (1242 - w) // 2
    sel = root / "depth_selection/val_selection_cropped"
    stem = "2011_09_26_drive_0002_sync_{}_0000000005_image_02"
    _write(sel / "image" / (stem.format("image") + ".png"), rgb[y0:, x0 : x0 + w], rgb=True)
    _write(sel / "velodyne_raw" / (stem.format("velodyne_raw") + ".png"), sp[y0:, x0 : x0 + w])
    _write(sel / "groundtruth_depth" / (stem.format("groundtruth_depth") + ".png"), gt[y0:, x0 : x0 + w])
    (sel / "intrinsics").mkdir(parents=True)
    (sel / "intrinsics" / (stem.format("image") + ".txt")).write_text(
        "721.5377 0.0 596.5593 0.0 721.5377 149.854 0 0 1"
    )
    # a second frame without ground truth: skipped
    _write(sel / "image" / (stem.format("image").replace("05", "06") + ".png"), rgb[y0:, x0 : x0 + w], rgb=True)


def test_val_selection_cropped(tmp_path):
    _selection_tree(tmp_path)
    ds = KittiDepthCompletion(tmp_path, "val_selection_cropped")
    assert len(ds) == 1 and ds.skipped == 1
    s = ds[0]
    assert s["rgb"].shape == (3, 352, 1216)
    assert float(s["K"][0, 2]) == pytest.approx(596.5593) and float(s["K"][1, 2]) == pytest.approx(149.854)


def test_bad_data_messages(tmp_path):
    _official_tree(tmp_path, [("2011_09_26_drive_0001_sync", "0000000005")])
    root = tmp_path
    gt_path = (
        root / "data_depth_annotated/train/2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02/0000000005.png"
    )
    rgb_path = root / "raw/2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000005.png"
    ds = KittiDepthCompletion(root, "train")
    # empty ground truth
    cv2.imwrite(str(gt_path), np.zeros((375, 1242), np.uint16))
    with pytest.raises(DataError, match="ground truth is empty"):
        ds[0]
    # mismatched RGB / depth size
    cv2.imwrite(str(gt_path), np.ones((375, 1242), np.uint16))
    cv2.imwrite(str(rgb_path), np.zeros((370, 1242, 3), np.uint8))
    with pytest.raises(DataError, match=r"does not match the RGB size 1242x370"):
        ds[0]
    # corrupt PNG (truncated file)
    rgb_path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(DataError, match="corrupt or unreadable image"):
        ds[0]
    # 8-bit depth PNG
    cv2.imwrite(str(rgb_path), np.zeros((375, 1242, 3), np.uint8))
    cv2.imwrite(str(gt_path), np.ones((375, 1242), np.uint8))
    with pytest.raises(DataError, match="uint16"):
        KittiDepthCompletion(root, "train").frame(0)
    # no frames at all
    with pytest.raises(DataError, match="no usable KITTI val"):
        KittiDepthCompletion(root, "val")


def test_read_p_rect_and_shared_frame(tmp_path):
    calib = tmp_path / "calib_cam_to_cam.txt"
    calib.write_text(f"P_rect_02: {P_RECT_02}\n")
    K = read_p_rect(calib, "image_02")
    np.testing.assert_allclose(K, [[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]])
    if not SHARED.is_dir():
        pytest.skip("shared data not available")
    f = load_shared_frame(SHARED, "image_03")
    assert f.rgb.shape == (375, 1242, 3)
    assert f.K[0, 2] == pytest.approx(609.5593)
    assert 0.15 < (f.gt > 0).mean() < 0.25 and f.gt.max() < 90
