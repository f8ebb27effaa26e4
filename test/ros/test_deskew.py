"""The nodes' deskew stage (ros/deskew.py) without a ROS graph: time fields in real PointCloud2 messages,
ego motion from an interpolated tf history and from twist topics, against analytic constant-twist motion."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from depth_completion_ros.core.errors import CalibrationError
from depth_completion_ros.ros.deskew import Deskewer, TfEgoMotion, TopicEgoMotion
from depth_completion_ros.ros.extrinsics import TransformBuffer
from depth_completion_ros.ros.params import DeskewConfig, depth_completion_config

S = 1_000_000_000
STAMP = 1_700_000_000 * S + 250_000_000
V, W = np.array([12.0, 0.5, 0.0]), np.array([0.0, 0.0, 0.6])  # forward + yawing left, in the LiDAR frame


class Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))

    def debug(self, text: str) -> None:
        self.lines.append(("debug", text))

    def count(self, level: str, text: str = "") -> int:
        return sum(1 for lv, t in self.lines if lv == level and text in t)


def _hat(w):
    return np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])


def pose(t: float, v=V, w=W) -> np.ndarray:
    """T_odom_from_lidar at t s after STAMP: constant body twist (v, w), identity at t = 0 (SE(3) exp)."""
    wt = np.asarray(w, float) * t
    th = np.linalg.norm(wt)
    Wh = _hat(wt)
    if th < 1e-12:
        R, Vm = np.eye(3) + Wh, np.eye(3)
    else:
        R = np.eye(3) + np.sin(th) / th * Wh + (1 - np.cos(th)) / th**2 * Wh @ Wh
        Vm = np.eye(3) + (1 - np.cos(th)) / th**2 * Wh + (th - np.sin(th)) / th**3 * Wh @ Wh
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, Vm @ (np.asarray(v, float) * t)
    return T


def scene(rng, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (the LiDAR frame at STAMP) and the moving LiDAR's view of each at its capture time."""
    world = rng.uniform([-30, -30, -2], [30, 30, 2], (times.size, 3))
    seen = np.array([pose(t)[:3, :3].T @ (p - pose(t)[:3, 3]) for p, t in zip(world, times, strict=True)])
    return world, seen


def cloud_msg(xyz: np.ndarray, extra: dict[str, np.ndarray], stamp_ns: int = STAMP, frame: str = "velo") -> PointCloud2:
    """A PointCloud2 with float32 x, y, z and the given extra fields (any numeric dtype), packed."""
    codes = {np.dtype(np.float32): 7, np.dtype(np.float64): 8, np.dtype(np.uint32): 6, np.dtype(np.int32): 5}
    dtype = np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + [(k, v.dtype.newbyteorder("<")) for k, v in extra.items()]
    )
    arr = np.zeros(len(xyz), dtype)
    for j, c in enumerate("xyz"):
        arr[c] = xyz[:, j]
    for k, v in extra.items():
        arr[k] = v
    msg = PointCloud2()
    msg.header = Header(frame_id=frame)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_ns // S, stamp_ns % S
    msg.height, msg.width = 1, len(xyz)
    msg.fields = [
        PointField(name=n, offset=dtype.fields[n][1], datatype=codes[dtype.fields[n][0].newbyteorder("=")], count=1)
        for n in dtype.names
    ]
    msg.point_step = msg.row_step = dtype.itemsize
    msg.row_step = dtype.itemsize * len(xyz)
    msg.is_dense = True
    msg.data = arr.tobytes()
    return msg


def _stamp(ns: int):
    msg = Header()
    msg.stamp.sec, msg.stamp.nanosec = ns // S, ns % S
    return msg.stamp


def tf_history(rate_hz: float = 20.0, span_s: float = 1.0) -> TransformBuffer:
    """odom <- velo at `rate_hz` around STAMP (what a robot's odometry publishes on /tf)."""
    buf = TransformBuffer()
    for t in np.arange(-span_s, span_s + 1e-9, 1.0 / rate_hz):
        buf.set_transform("odom", "velo", STAMP + round(t * S), pose(t), static=False)
    return buf


def test_tf_interpolated_ego_motion_matches_the_analytic_motion() -> None:
    buf = tf_history()
    motion = TfEgoMotion(buf.lookup, "odom")
    for t0, t1 in ((-0.05, 0.05), (-0.013, 0.071), (0.0, 0.1)):
        v, w = motion.twist("velo", STAMP + round(t0 * S), STAMP + round(t1 * S))
        # tf interpolates linearly between 20 Hz stamps: the arc's chord; v, w within 0.3 % and 1e-6 rad/s
        assert np.allclose(w, W, atol=1e-6), w
        assert np.linalg.norm(v - V) < 3e-3 * np.linalg.norm(V), v
    with pytest.raises(CalibrationError, match="odom"):
        motion.twist("velo", STAMP + 5 * S, STAMP + 5 * S + S // 10)  # beyond the history: extrapolation


@pytest.mark.parametrize(
    ("field", "encode"),
    [  # times relative to STAMP -> (field values, header stamp)
        ("t", lambda t: (np.rint((t + 0.05) * 1e9).astype(np.uint32), STAMP - S // 20)),  # Ouster: ns, scan start
        ("time", lambda t: (t.astype(np.float32), STAMP)),  # Velodyne: float32 s from the stamp
        ("timestamp", lambda t: (STAMP * 1e-9 + t, STAMP)),  # Hesai: absolute float64 s
    ],
)
def test_stage_compensates_per_point_times_with_tf(rng, field, encode) -> None:
    times = rng.uniform(-0.05, 0.05, 3000)
    world, seen = scene(rng, times)
    raw, stamp = encode(times)
    msg = cloud_msg(seen, {field: raw}, stamp_ns=stamp)
    log = Logger()
    stage = Deskewer(DeskewConfig(), TfEgoMotion(tf_history().lookup, "odom"), log)
    points, t = stage.decode(msg)
    assert t is not None and points.shape == (3000, 4)
    out, out_stamp = stage.apply(points, t, msg.header, _stamp(STAMP))  # the camera at STAMP
    assert (out_stamp.sec, out_stamp.nanosec) == (STAMP // S, STAMP % S)
    err = np.linalg.norm(out[:, :3] - world, axis=1)
    before = np.linalg.norm(seen - world, axis=1)
    # first order: what remains is the second-order term of the motion (and float32 storage)
    w, v, r = np.linalg.norm(W), np.linalg.norm(V), np.linalg.norm(world, axis=1)
    assert (err <= (w**2 * (r + 1) + w * v) * times**2 + 1e-4).all()
    assert err.max() < 0.02 * before.max(), (err.max(), before.max())
    assert log.count("info", f"field {field!r}") == 1


def test_camera_instant_and_azimuth_model(rng) -> None:
    """No time field: azimuth model; the points also move to a camera stamp 30 ms after the scan's."""
    pts = rng.uniform([-30, -30, -2], [30, 30, 2], (2000, 3))
    az = np.arctan2(pts[:, 1], pts[:, 0])
    times = -az / (2 * np.pi) * 0.1  # clockwise, 0.1 s per revolution
    world = np.array([pose(t)[:3, :3] @ p + pose(t)[:3, 3] for p, t in zip(pts, times, strict=True)])
    cam = 0.03
    expected = (world - pose(cam)[:3, 3]) @ pose(cam)[:3, :3]  # the world seen from the LiDAR at the camera time
    stage = Deskewer(DeskewConfig(), TfEgoMotion(tf_history().lookup, "odom"), Logger())
    msg = cloud_msg(pts, {"intensity": np.ones(len(pts), np.float32)})
    points, t = stage.decode(msg)
    assert t is None
    out, stamp = stage.apply(points, t, msg.header, _stamp(STAMP + round(cam * S)))
    assert stamp.nanosec == (STAMP + round(cam * S)) % S
    err = np.linalg.norm(out - expected, axis=1)
    assert err.max() < 0.05 and np.median(err) < 0.01, err.max()
    assert np.linalg.norm(pts - expected, axis=1).max() > 1.0  # uncompensated: metres off


def test_no_timing_and_no_ego_motion_passes_through_with_one_warning(rng) -> None:
    pts = rng.uniform(-10, 10, (500, 3)).astype(np.float32)
    msg = cloud_msg(pts, {})
    for motion in (None, TfEgoMotion(TransformBuffer().lookup, "odom")):  # no source / tf without odom
        log = Logger()
        stage = Deskewer(DeskewConfig(), motion, log)
        for k in range(5):
            points, t = stage.decode(msg)
            out, stamp = stage.apply(points, t, msg.header, _stamp(STAMP + k))
            assert np.array_equal(out, pts) and stamp == msg.header.stamp
        assert log.count("warning") == 1 and log.count("warning", "not motion-compensated") == 1
    with pytest.raises(CalibrationError, match="odom"):  # mode on: the frame is refused instead
        stage = Deskewer(DeskewConfig(mode="on"), TfEgoMotion(TransformBuffer().lookup, "odom"), Logger())
        stage.apply(*stage.decode(msg), msg.header, _stamp(STAMP))
    off = Deskewer(DeskewConfig(mode="off"), TfEgoMotion(tf_history().lookup, "odom"), Logger())
    points, t = off.decode(cloud_msg(pts, {"time": np.zeros(len(pts), np.float32)}))
    assert t is None and points.shape == (500, 3)


def test_twist_topic_in_another_frame(rng) -> None:
    """A TwistStamped of base_link (0.8 m behind the LiDAR, yawed 90 deg) moved into the LiDAR frame."""
    T_velo_from_base = np.eye(4)
    T_velo_from_base[:3, :3] = [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # base x = velo -y
    T_velo_from_base[:3, 3] = [-0.8, 0.0, 0.0]
    buf = TransformBuffer()
    buf.set_transform("velo", "base", 0, T_velo_from_base, static=True)
    motion = TopicEgoMotion("twist", "/ego_motion", buf.lookup)
    R = T_velo_from_base[:3, :3]
    w_base = R.T @ W
    lever = np.array([0.8, 0.0, 0.0])  # the LiDAR origin relative to base, in the velo frame
    v_base = R.T @ (V - np.cross(W, lever))  # base's velocity so that the LiDAR moves at V
    for k in range(-5, 6):
        motion.add(STAMP + k * S // 50, "base", v_base, w_base)
    v, w = motion.twist("velo", STAMP - S // 20, STAMP + S // 20)
    assert np.allclose(v, V) and np.allclose(w, W)
    imu = TopicEgoMotion("imu", "/imu", buf.lookup)
    imu.add(STAMP, "base", np.zeros(3), w_base)
    v, w = imu.twist("velo", STAMP - S // 20, STAMP + S // 20)
    assert np.allclose(w, W) and np.allclose(v, np.cross(W, lever))  # IMU at rest: only the lever arm moves
    with pytest.raises(CalibrationError, match=r"within 0\.5 s"):
        motion.twist("velo", STAMP + 3 * S, STAMP + 3 * S + S // 10)


def test_parameters() -> None:
    cfg = depth_completion_config({"deskew": "on", "deskew_motion_source": "odometry", "deskew_scan_period": 0.05})
    assert cfg.deskew == replace(DeskewConfig(), mode="on", motion_source="odometry", scan_period=0.05)
    with pytest.raises(ValueError, match="deskew_motion_source"):
        depth_completion_config({"deskew": "on", "deskew_motion_source": "none"})
    with pytest.raises(ValueError, match="deskew'"):
        depth_completion_config({"deskew": "sometimes"})
    with pytest.raises(ValueError, match="odom_frame"):
        depth_completion_config({"odom_frame": ""})


def test_unquoted_on_off_arrive_as_booleans() -> None:
    """`-p deskew:=off` and YAML `deskew: off` reach the node as bool False (YAML 1.1): read as the mode."""
    assert depth_completion_config({"deskew": False}).deskew.mode == "off"
    assert depth_completion_config({"deskew": True}).deskew.mode == "on"
    with pytest.raises(ValueError, match="deskew_clockwise"):
        depth_completion_config({"deskew_clockwise": "yes"})


def test_unusable_point_times_fall_back_to_the_azimuth_model(rng) -> None:
    """Absolute times an hour off the stamp (clock not synchronised): auto warns once and ignores them."""
    from depth_completion_ros.core.errors import MessageFormatError

    pts = rng.uniform(-10, 10, (300, 3))
    msg = cloud_msg(pts, {"timestamp": np.full(300, STAMP * 1e-9 + 3600.0)})
    log = Logger()
    stage = Deskewer(DeskewConfig(), TfEgoMotion(tf_history().lookup, "odom"), log)
    for _ in range(3):
        points, t = stage.decode(msg)
        assert t is None and points.shape == (300, 3)
    assert log.count("warning", "per-point times unusable") == 1
    with pytest.raises(MessageFormatError, match="synchronised"):
        Deskewer(DeskewConfig(mode="on"), TfEgoMotion(tf_history().lookup, "odom"), Logger()).decode(msg)


def test_lagging_tf_uses_an_earlier_window() -> None:
    """Odometry 30 ms behind the scan's end: the twist of a window just before it (constant-twist motion)."""
    buf = TransformBuffer()
    for t in np.arange(-1.0, 0.02 + 1e-9, 0.02):  # the last stamp: STAMP + 20 ms
        buf.set_transform("odom", "velo", STAMP + round(t * S), pose(t), static=False)
    v, w = TfEgoMotion(buf.lookup, "odom").twist("velo", STAMP - S // 20, STAMP + S // 20)
    assert np.allclose(w, W, atol=1e-6) and np.linalg.norm(v - V) < 3e-3 * np.linalg.norm(V)


def test_tf_history_is_bounded() -> None:
    buf = TransformBuffer(cache_time_s=100.0, max_stamps=5)
    for k in range(20):
        buf.set_transform("odom", "velo", STAMP + k * S // 100, pose(k / 100), static=False)
    with pytest.raises(CalibrationError, match="known for"):
        buf.lookup("odom", "velo", STAMP + 10 * S // 100)  # dropped: only the 5 newest stamps are kept
    assert np.allclose(buf.lookup("odom", "velo", STAMP + 17 * S // 100), pose(0.17))


def test_topic_messages_of_each_kind() -> None:
    from types import SimpleNamespace as NS

    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import Imu

    def vec(a):
        return NS(x=a[0], y=a[1], z=a[2])

    header = Header(frame_id="velo")
    header.stamp = _stamp(STAMP)
    twist = TwistStamped(header=header)
    twist.twist.linear.x, twist.twist.angular.z = 3.0, 0.2
    imu = Imu(header=header)
    imu.angular_velocity.z = 0.2
    moving = NS(linear=vec([3.0, 0, 0]), angular=vec([0, 0, 0.2]))
    odom = NS(header=header, child_frame_id="velo", twist=NS(twist=moving))  # nav_msgs/Odometry's fields
    for kind, msg, v_expected in (("twist", twist, 3.0), ("imu", imu, 0.0), ("odometry", odom, 3.0)):
        motion = TopicEgoMotion(kind, "/m", None)
        motion.add_message(msg)
        v, w = motion.twist("velo", STAMP - S // 20, STAMP + S // 20)
        assert np.allclose(v, [v_expected, 0, 0]) and np.allclose(w, [0, 0, 0.2]), kind
