"""kitti-to-bag: a rosbag2 that rosbags reads back with the standard types, stamps and /tf_static."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from depth_completion_ros.cli import main
from depth_completion_ros.tools.kitti_to_bag import TOPICS

CAM_TO_CAM = """calib_time: 09-Jan-2012 13:57:47
S_rect_02: 6.400000e+01 4.800000e+01
R_rect_00: 1 0 0 0 1 0 0 0 1
P_rect_02: 5.000000e+01 0 3.200000e+01 0 0 5.000000e+01 2.400000e+01 0 0 0 1 0
"""
VELO_TO_CAM = "R: 0 -1 0 0 0 -1 1 0 0\nT: 0 -0.08 -0.27\n"


def _fake_drive(root: Path, n: int = 3) -> Path:
    """A tiny raw-drive layout: 64x48 images, small scans, timestamps, calibration in the date dir."""
    (root / "calib_cam_to_cam.txt").write_text(CAM_TO_CAM)
    (root / "calib_velo_to_cam.txt").write_text(VELO_TO_CAM)
    drive = root / "2011_09_26_drive_0001_sync"
    (drive / "image_02" / "data").mkdir(parents=True)
    (drive / "velodyne_points" / "data").mkdir(parents=True)
    stamps = []
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(drive / "image_02" / "data" / f"{i:010d}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
        pts = np.column_stack([rng.uniform(2, 20, (500, 3)), rng.random(500)]).astype(np.float32)
        pts.tofile(drive / "velodyne_points" / "data" / f"{i:010d}.bin")
        stamps.append(f"2011-09-26 13:02:25.{100_000_000 * i + 5:09d}")
    (drive / "image_02" / "timestamps.txt").write_text("\n".join(stamps) + "\n")
    return drive


def _read(bag: Path) -> dict[str, list[tuple[int, object]]]:
    out: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([bag]) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
        types = {c.topic: c.msgtype for c in reader.connections}
    expected = {
        TOPICS["image"]: "sensor_msgs/msg/Image",
        TOPICS["camera_info"]: "sensor_msgs/msg/CameraInfo",
        TOPICS["points"]: "sensor_msgs/msg/PointCloud2",
        TOPICS["tf_static"]: "tf2_msgs/msg/TFMessage",
    }
    if "/tf" in types:  # --odometry
        expected.update({"/tf": "tf2_msgs/msg/TFMessage", "/kitti/oxts/twist": "geometry_msgs/msg/TwistStamped"})
    assert types == expected
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_fake_drive_round_trip(tmp_path: Path, storage: str) -> None:
    drive = _fake_drive(tmp_path)
    bag = tmp_path / "bag"
    assert main(["kitti-to-bag", str(drive), "--out", str(bag), "--storage", storage]) == 0
    assert (bag / "metadata.yaml").is_file()
    msgs = _read(bag)
    assert [len(msgs[TOPICS[k]]) for k in ("image", "camera_info", "points", "tf_static")] == [3, 3, 3, 1]
    for k in range(3):
        (t_img, img), (t_info, info), (t_pts, pts) = (msgs[TOPICS[n]][k] for n in ("image", "camera_info", "points"))
        assert t_img == t_info == t_pts
        assert img.header.stamp == info.header.stamp == pts.header.stamp
        assert (img.width, img.height, img.encoding) == (64, 48, "rgb8")
        assert int(np.frombuffer(img.data, np.uint8)[0]) == 40 * k
        assert pts.width * pts.height == 500
        assert [f.name for f in pts.fields] == ["x", "y", "z", "intensity"]
    stamps = [t for t, _ in msgs[TOPICS["image"]]]
    assert np.allclose(np.diff(stamps), 1e8, atol=10)  # recorded timestamps.txt, 10 Hz
    tf = msgs[TOPICS["tf_static"]][0][1].transforms[0]
    assert tf.child_frame_id == "velo_link"
    assert tf.header.frame_id == msgs[TOPICS["image"]][0][1].header.frame_id


def test_missing_files_and_existing_output(tmp_path: Path, capsys) -> None:
    drive = _fake_drive(tmp_path)
    (drive / "image_02" / "data" / "0000000001.png").unlink()
    assert main(["kitti-to-bag", str(drive), "--out", str(tmp_path / "bag")]) == 2
    assert "missing KITTI files" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert main(["kitti-to-bag", str(drive), "--out", str(tmp_path / "exists")]) == 2


def test_shared_frame_repeated(kitti_dc_dir: Path, tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    assert main(["kitti-to-bag", str(kitti_dc_dir), "--out", str(bag), "--repeat", "3"]) == 0
    msgs = _read(bag)
    assert len(msgs[TOPICS["points"]]) == 3
    info = msgs[TOPICS["camera_info"]][0][1]
    assert (info.width, info.height) == (1242, 375)
    assert info.p[0] == pytest.approx(721.5377)
    cloud = msgs[TOPICS["points"]][0][1]
    assert cloud.width * cloud.height == 121948


def test_shared_frame_raw_with_odometry(kitti_dc_dir: Path, tmp_path: Path) -> None:
    """--odometry: raw scans, and /tf whose LiDAR motion is the OXTS velocity the offline de-skew uses."""
    from depth_completion_ros.core.calibration import read_kitti_oxts_motion
    from depth_completion_ros.core.projection import twist_from_poses
    from depth_completion_ros.ros.extrinsics import TransformBuffer
    from depth_completion_ros.tools.kitti_to_bag import ODOMETRY_TOPICS, VELO_FRAME

    bag = tmp_path / "bag"
    argv = ["kitti-to-bag", str(kitti_dc_dir), "--out", str(bag), "--repeat", "2", "--odometry"]  # implies raw
    assert main(argv) == 0
    msgs = _read(bag)
    raw = np.fromfile(kitti_dc_dir / "raw" / "lidar_data.bin", np.float32).reshape(-1, 4)
    cloud = msgs[TOPICS["points"]][0][1]
    xyz = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 4)[:, :3]
    assert np.array_equal(xyz, raw[:, :3])  # not de-skewed
    buf = TransformBuffer()
    for topic, static in ((TOPICS["tf_static"], True), (ODOMETRY_TOPICS["tf"], False)):
        for _, m in msgs[topic]:
            buf.add_tf_message(m, static=static)
    stamp = cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec
    # every tf knot is logged before the cloud that needs it (the scan's end)
    cloud_log = msgs[TOPICS["points"]][0][0]
    assert max(t for t, m in msgs[ODOMETRY_TOPICS["tf"]] if t <= cloud_log) >= stamp + 50_000_000
    T0 = buf.lookup("odom", VELO_FRAME, stamp - 50_000_000)
    T1 = buf.lookup("odom", VELO_FRAME, stamp + 50_000_000)
    v, w = twist_from_poses(T0, T1, 0.1)
    v_ref, w_ref = read_kitti_oxts_motion(
        kitti_dc_dir / "raw" / "imu_data.txt", kitti_dc_dir / "raw" / "calib_imu_to_velo.txt"
    )
    # equal up to the calibration rotation's departure from orthonormality (tf carries it as a unit quaternion)
    assert np.allclose(w, w_ref, atol=1e-7) and np.allclose(v, v_ref, atol=1e-3)
    # the camera hangs below the LiDAR in the same tree
    T_cam = buf.lookup("kitti_camera_optical", VELO_FRAME, stamp)
    assert np.isfinite(T_cam).all() and len(msgs[ODOMETRY_TOPICS["twist"]]) == 2
