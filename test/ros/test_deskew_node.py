"""The deskew stage in a running pointcloud_to_depth_node: /tf ego motion, per-point times, the camera's instant,
and the one warning for clouds it cannot compensate."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

W, H = 96, 64
FX = FY = 80.0
CX, CY = 47.5, 31.5
S = 1_000_000_000
# LiDAR (x forward, y left, z up) -> camera optical frame
T_CAM_FROM_VELO = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
V = np.array([10.0, 0.0, 0.0])  # the LiDAR drives forward at 10 m/s


def _timed_cloud(msgs, points: np.ndarray, times: np.ndarray, t_ns: int):
    """x, y, z + float32 `time` (s relative to the stamp, the Velodyne convention)."""
    msg = msgs.cloud(points, t_ns, "velo")
    data = np.empty((len(points), 4), np.float32)
    data[:, :3], data[:, 3] = points, times
    from sensor_msgs.msg import PointField

    msg.fields = [*msg.fields, PointField(name="time", offset=12, datatype=PointField.FLOAT32, count=1)]
    msg.point_step, msg.row_step = 16, 16 * len(points)
    msg.data = data.tobytes()
    return msg


def _odometry(msgs, t_ns: int, span_s: float = 1.0, rate_hz: float = 20.0):
    """/tf odom <- velo at `rate_hz` over [t - span, t + span], moving at V."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    out = TFMessage()
    for k in range(-int(span_s * rate_hz), int(span_s * rate_hz) + 1):
        dt = k / rate_hz
        tf = TransformStamped()
        tf.header = msgs.header(t_ns + round(dt * S), "odom")
        tf.child_frame_id = "velo"
        tf.transform.translation.x, tf.transform.translation.y = 100.0 + V[0] * dt, 5.0
        tf.transform.rotation.w = 1.0
        out.transforms.append(tf)
    return out


def _depth(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.float32).reshape(H, msg.step // 4)[:, :W]


def test_node_compensates_with_tf_and_warns_once_without(start_node, ros_peer, msgs, rng):
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    matrix = {"extrinsic_matrix": T_CAM_FROM_VELO, "slop": 0.05, "max_depth": 100.0}
    node = start_node("pointcloud_to_depth_node", params=matrix)
    node.wait_for_log(r"deskew auto: ego motion from tf odom", timeout=40)
    pub_info = ros_peer.publisher(CameraInfo, "/rgb/camera_info")
    pub_cloud = ros_peer.publisher(PointCloud2, "/lidar/points")
    pub_tf = ros_peer.publisher(TFMessage, "/tf")
    out_depth = ros_peer.collector(Image, "/depth_registered/image")
    for pub in (pub_info, pub_cloud, pub_tf):
        ros_peer.wait_for_subscribers(pub)
    ros_peer.wait_for_publishers("/depth_registered/image")
    time.sleep(0.5)

    # Points that land at known pixels and depths when seen from the LiDAR at the camera's instant.
    n = 200
    flat = np.unique(rng.integers(0, W * H, n))
    us, vs = flat % W, flat // W
    z = rng.uniform(5.0, 40.0, len(flat))
    world = np.stack([z, -(us + 0.25 - CX) * z / FX, -(vs + 0.25 - CY) * z / FY], axis=1)
    expected = np.full((H, W), np.nan, np.float32)
    expected[vs, us] = z

    # 1. no time field and no odometry yet: passed through (the cloud's stamp), one warning for two frames
    for k in (1, 2):
        t = 10 * S + k * S // 10
        pub_info.publish(msgs.camera_info(t, "cam", W, H, FX, FY, CX, CY))
        pub_cloud.publish(msgs.cloud(world.astype(np.float32), t, "velo"))
        depth = _depth(out_depth.wait_stamp(t)[0])
        np.testing.assert_allclose(depth[vs, us], z, rtol=1e-5)
    assert node.count(r"not motion-compensated") == 1

    # 2. /tf odometry and per-point times: each point seen from where the LiDAR was when it was measured
    t = 20 * S
    camera_t = t + 20_000_000  # the camera 20 ms after the cloud's stamp
    pub_tf.publish(_odometry(msgs, t))
    time.sleep(0.5)
    times = rng.uniform(-0.05, 0.05, len(flat))
    seen = world - V * (times - 0.02)[:, None]  # the LiDAR is at V (t_i - 0.02 s) relative to the camera instant
    pub_info.publish(msgs.camera_info(camera_t, "cam", W, H, FX, FY, CX, CY))
    pub_cloud.publish(_timed_cloud(msgs, seen, times, t))
    msg = out_depth.wait_stamp(camera_t)[0]  # stamped with the camera's instant the points now describe
    depth = _depth(msg)
    np.testing.assert_array_equal(np.isfinite(depth), np.isfinite(expected))
    np.testing.assert_allclose(depth[vs, us], z, rtol=1e-4)
    node.wait_for_log(r"ego motion available", timeout=5)
    assert node.count(r"not motion-compensated") == 1
    assert node.count(r"point times from field 'time' \(s, relative to the header stamp\)") == 1
