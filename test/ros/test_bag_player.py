"""bag_player process: recorded timing, rate factor, start offset, topic selection, loop, /clock, ROS 1 bags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, PointCloud2
from tf2_msgs.msg import TFMessage

from depth_completion_ros.core.calibration import KittiCalibration
from depth_completion_ros.data.synthetic import generate_scene
from depth_completion_ros.tools.kitti_to_bag import KittiFrame, write_bag

FRAMES = 10


def _bag(tmp_path: Path) -> Path:
    scene = generate_scene(seed=1, width=160, height=48, lidar_beams=16)
    t0 = 1_700_000_000_000_000_000
    frames = (KittiFrame(scene.rgb, scene.points_lidar, t0 + k * 100_000_000) for k in range(FRAMES))
    bag = tmp_path / "bag"
    write_bag(bag, KittiCalibration(scene.camera, scene.T_camera_from_lidar), frames)
    return bag


def _play(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    # --delay: let discovery with this test's subscribers finish before the first message goes out.
    cmd = [sys.executable, "-m", "depth_completion_ros.ros.bag_player", "--delay", "3", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_player_timing_rate_offset_topics_and_clock(tmp_path, ros_env, ros_peer) -> None:
    bag = _bag(tmp_path)
    images = ros_peer.collector(Image, "/kitti/camera/image_raw")
    clouds = ros_peer.collector(PointCloud2, "/kitti/velo/points")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    tf = ros_peer.collector(TFMessage, "/tf_static", latched)
    clock = ros_peer.collector(Clock, "/clock")

    run = _play(ros_env, str(bag), "--clock", "50")
    assert run.returncode == 0, run.stderr
    images.wait(FRAMES)
    clouds.wait(FRAMES)
    tf.wait(1)
    assert len(clock.wait(20)) >= 20  # ~0.9 s at 50 Hz
    gaps = np.diff(images.times)
    assert abs(np.median(gaps) - 0.1) < 0.02  # recorded 10 Hz
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in images.messages]
    assert np.all(np.diff(stamps) == 100_000_000)  # no re-stamping

    images.clear()
    clouds.clear()
    run = _play(ros_env, str(bag), "--rate", "2", "--start-offset", "0.45", "--topics", "/kitti/camera/image_raw")
    assert run.returncode == 0, run.stderr
    got = images.wait(5)
    assert abs(np.median(np.diff(images.times)) - 0.05) < 0.015  # twice as fast
    first = got[0].header.stamp
    assert (first.sec * 10**9 + first.nanosec - stamps[0]) == 500_000_000  # starts at the first frame >= 0.45 s
    assert not clouds.messages  # topic selection


def test_player_rejects_bad_bag(tmp_path, ros_env) -> None:
    run = _play(ros_env, str(tmp_path / "missing"))
    assert run.returncode == 2
    assert "cannot play" in run.stderr


def test_player_replays_ros1_bag(luminar_bag, ros_env, ros_peer) -> None:
    clouds = ros_peer.collector(PointCloud2, "/luminar_pointcloud")
    run = _play(ros_env, str(luminar_bag), "--topics", "/luminar_pointcloud", "--rate", "4")
    assert run.returncode == 0, run.stderr
    got = clouds.wait(5)
    assert {f.name for f in got[0].fields} >= {"x", "y", "z", "intensity"}
    assert got[0].width * got[0].height > 10_000
