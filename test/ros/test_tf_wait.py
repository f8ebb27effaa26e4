"""The tf wait: a frame is held up to `tf_timeout` for its transform (as a tf2 message filter), so the first
frames no longer race /tf_static; only a transform that is really missing gives a warning."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from depth_completion_ros.core.errors import CalibrationError
from depth_completion_ros.ros.extrinsics import TransformBuffer

S = 1_000_000_000
W, H = 64, 48
CAM, LIDAR = "cam_optical", "lidar"
T_CAM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.1], [0.0, 0.0, -1.0, -0.2], [1.0, 0.0, 0.0, 0.05], [0.0, 0.0, 0.0, 1.0]])


def test_buffer_lookup_waits_for_a_transform_that_arrives_later() -> None:
    buf = TransformBuffer()
    T = np.eye(4)
    T[:3, 3] = [1.0, 2.0, 3.0]
    timer = threading.Timer(0.2, lambda: buf.set_transform("cam", "lidar", 0, T, static=True))
    timer.start()
    try:
        got = buf.lookup("cam", "lidar", 5 * S, timeout_s=30.0)  # returns as soon as the transform is stored
    finally:
        timer.cancel()
    np.testing.assert_allclose(got, T)


def test_buffer_lookup_without_transform_fails_after_timeout() -> None:
    buf = TransformBuffer()
    buf.set_transform("cam", "other", 0, np.eye(4), static=True)
    with pytest.raises(CalibrationError, match="no transform from 'lidar' to 'cam'"):
        buf.lookup("cam", "lidar", 5 * S, timeout_s=0.05)
    with pytest.raises(CalibrationError):
        buf.lookup("cam", "lidar", 5 * S)  # no wait at all


@pytest.mark.ros
def test_node_holds_first_frame_until_tf_static_arrives(start_node, ros_peer, msgs) -> None:
    from geometry_msgs.msg import TransformStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    from depth_completion_ros.ros.extrinsics import quat_xyzw_from_matrix

    node = start_node(
        "depth_completion_node",
        params={"input_type": "pointcloud", "tf_timeout": 4.0, "device": "cpu", "qos_reliability": "reliable"},
    )
    node.wait_for_log(r"ready: input_type=pointcloud", timeout=40)
    pubs = {
        "img": ros_peer.publisher(Image, "/rgb/image"),
        "info": ros_peer.publisher(CameraInfo, "/rgb/camera_info"),
        "cloud": ros_peer.publisher(PointCloud2, "/lidar/points"),
    }
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    depth = ros_peer.collector(Image, "/depth")
    for pub in pubs.values():
        ros_peer.wait_for_subscribers(pub)
    ros_peer.wait_for_publishers("/depth")
    time.sleep(0.5)

    # points 5-20 m in front of the camera, in the LiDAR frame
    rng = np.random.default_rng(0)
    z = rng.uniform(5.0, 20.0, 400)
    uv = rng.uniform([0, 0], [W, H], (400, 2))
    p_cam = np.column_stack([(uv[:, 0] - 31.5) * z / 50.0, (uv[:, 1] - 23.5) * z / 50.0, z])
    p_lidar = ((p_cam - T_CAM_LIDAR[:3, 3]) @ T_CAM_LIDAR[:3, :3]).astype(np.float32)
    rgb = np.full((H, W, 3), 120, np.uint8)

    def send(t_ns: int, lidar_frame: str = LIDAR) -> None:
        pubs["info"].publish(msgs.camera_info(t_ns, CAM, W, H, 50.0, 50.0, 31.5, 23.5))
        pubs["cloud"].publish(msgs.cloud(p_lidar, t_ns, lidar_frame))
        pubs["img"].publish(msgs.image(rgb, t_ns, CAM))

    t1 = 50 * S
    send(t1)  # before any /tf_static: held, not skipped
    time.sleep(0.5)
    tf = TransformStamped()
    tf.header = msgs.header(t1, CAM)
    tf.child_frame_id = LIDAR
    tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = map(float, T_CAM_LIDAR[:3, 3])
    r = tf.transform.rotation
    r.x, r.y, r.z, r.w = map(float, quat_xyzw_from_matrix(T_CAM_LIDAR[:3, :3]))
    ros_peer.publisher(TFMessage, "/tf_static", latched).publish(TFMessage(transforms=[tf]))
    depth.wait_stamp(t1, timeout=30)
    assert "frame skipped" not in node.output()

    # a frame whose transform never comes: skipped after tf_timeout, with one warning that says so
    start = len(node.output())
    send(60 * S, lidar_frame="nowhere")
    node.wait_for_log(r"frame skipped \(CalibrationError\): no transform from 'nowhere'.*tf_timeout", start=start)
