"""pointcloud_to_depth_node as a real process: projection output, and a missing transform that is skipped."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

W, H = 96, 64
FX = FY = 80.0
CX, CY = 47.5, 31.5
S = 1_000_000_000


def test_projection_and_missing_transform(start_node, ros_peer, msgs, rng):
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    # tf is the only extrinsics source: a cloud in another frame has no transform (no /tf publisher here)
    node = start_node("pointcloud_to_depth_node", params={"use_tf": True, "slop": 0.05, "max_depth": 30.0})
    node.wait_for_log(r"ready: extrinsics from tf", timeout=40)
    pub_info = ros_peer.publisher(CameraInfo, "/rgb/camera_info")
    pub_cloud = ros_peer.publisher(PointCloud2, "/lidar/points")
    out_depth = ros_peer.collector(Image, "/depth_registered/image")
    out_info = ros_peer.collector(CameraInfo, "/depth_registered/camera_info")
    ros_peer.wait_for_subscribers(pub_info)
    ros_peer.wait_for_subscribers(pub_cloud)
    ros_peer.wait_for_publishers("/depth_registered/image")
    time.sleep(0.5)

    # points at known pixels (quarter-pixel offset: every rounding convention picks the same pixel)
    n = 300
    us = rng.integers(0, W, n)
    vs = rng.integers(0, H, n)
    flat = np.unique(vs * W + us)
    us, vs = flat % W, flat // W
    z = rng.uniform(2.0, 20.0, len(flat))
    points = np.stack([(us + 0.25 - CX) * z / FX, (vs + 0.25 - CY) * z / FY, z], axis=1).astype(np.float32)
    far = points[:10] * np.float32(100.0 / points[:10, 2:3])  # beyond max_depth: dropped

    t = 10 * S
    start = len(node.output())
    pub_info.publish(msgs.camera_info(t, "cam", W, H, FX, FY, CX, CY))
    pub_cloud.publish(msgs.cloud(points, t, "velodyne"))
    node.wait_for_log(r"frame skipped \(CalibrationError\): .*(tf|transform)", timeout=15, start=start)
    assert node.proc.poll() is None

    t = 11 * S
    pub_info.publish(msgs.camera_info(t, "cam", W, H, FX, FY, CX, CY))
    pub_cloud.publish(msgs.cloud(np.concatenate([points, far]), t, "cam"))  # same frame: identity
    depth_msg = out_depth.wait_stamp(t)[0]
    info_msg = out_info.wait_stamp(t)[0]
    assert (depth_msg.encoding, depth_msg.width, depth_msg.height) == ("32FC1", W, H)
    assert depth_msg.header.frame_id == "cam"
    assert info_msg.header == depth_msg.header
    depth = np.frombuffer(bytes(depth_msg.data), np.float32).reshape(H, depth_msg.step // 4)[:, :W]
    expected = np.full((H, W), np.nan, np.float32)
    expected[vs, us] = z
    np.testing.assert_array_equal(np.isfinite(depth), np.isfinite(expected))
    np.testing.assert_allclose(depth[np.isfinite(depth)], expected[np.isfinite(expected)], rtol=1e-5)
    assert node.stop(signal.SIGTERM) == 0  # clean exit on SIGTERM too
