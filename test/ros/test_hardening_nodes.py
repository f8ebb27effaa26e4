"""Regression tests of issue 12 against real node processes (one test per defect class in the nodes).

1. hostile /tf: bad transforms are refused with a warning, never change the extrinsic in use, never stop a node;
   a flood of frame names is shed by the buffer's bound;
2. a checkpoint asking for unbounded work (iterations 1e9) is refused at start;
3. a degenerate CameraInfo (fy = 0, focal 1e-30, skew 1e6) is a frame skipped naming the field; a reflection
   extrinsic from parameters is refused at start;
5. run-time iterations / max_depth apply to the learned model without reloading the checkpoint (it may be gone);
   SIGINT exits without waiting for a long frame;
6. every RGB image is accounted for (processed, superseded, failed, unmatched, waiting) in `stats`, with a warning
   when nothing is output;
7. repeated start / SIGINT under load: exit 0, no abort, no publish on an invalid context.
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

W, H = 160, 120
FX = FY = 100.0
CX, CY = 79.5, 59.5
CAM, LIDAR = "camera_optical", "lidar"
R_CAM_LIDAR = [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]
T_CAM_LIDAR = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
Q_CAM_LIDAR = (0.5, -0.5, 0.5, 0.5)  # x y z w of R_CAM_LIDAR
S = 1_000_000_000
BAD_LOG = ("Traceback", "context is invalid", "terminate called")


def _points(n: int = 800) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.uniform(6, 10, n)
    return np.column_stack([x, rng.uniform(-0.7, 0.7, n) * x, rng.uniform(-0.5, 0.5, n) * x]).astype(np.float32)


def _rgb() -> np.ndarray:
    rgb = np.full((H, W, 3), 120, np.uint8)
    rgb[:, W // 2 :] = (30, 60, 200)
    return rgb


def _depth(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.step // 4)[:, : msg.width].copy()


def _params(**extra):
    params = {
        "input_type": "pointcloud",
        "extrinsic_matrix": T_CAM_LIDAR,
        "min_depth": 0.5,
        "max_depth": 50.0,
        "device": "cpu",
        "qos_reliability": "reliable",
        "qos_depth": 100,
        "publish_color": False,
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


class Sender:
    """Publishes RGB + CameraInfo + cloud sets from the test peer."""

    def __init__(self, peer, msgs) -> None:
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        qos = 100
        self.msgs = msgs
        self.pub_info = peer.publisher(CameraInfo, "/rgb/camera_info", qos)
        self.pub_cloud = peer.publisher(PointCloud2, "/lidar/points", qos)
        self.pub_img = peer.publisher(Image, "/rgb/image", qos)
        self.rgb, self.pts = _rgb(), _points()

    def wait(self, peer, n: int = 1) -> None:
        """Discovery done: `n` subscribers on the camera info and cloud (both nodes), one on the image."""
        for pub in (self.pub_info, self.pub_cloud):
            peer.wait_for_subscribers(pub, n)
        peer.wait_for_subscribers(self.pub_img, 1)

    def send(self, t: int, *, info=None, cloud_t: int | None = None) -> None:
        self.pub_info.publish(info or self.msgs.camera_info(t, CAM, W, H, FX, FY, CX, CY))
        self.pub_cloud.publish(self.msgs.cloud(self.pts, t if cloud_t is None else cloud_t, LIDAR))
        self.pub_img.publish(self.msgs.image(self.rgb, t, CAM))


def _set_parameters(peer, node_name: str, **values):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = peer.node.create_client(SetParameters, f"/{node_name}/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    future = client.call_async(request)
    deadline = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert future.done(), "set_parameters did not answer"
    return future.result().results


def _tf(parent: str, child: str, xyz=(0.0, 0.0, 0.0), q=(0.0, 0.0, 0.0, 1.0), t_ns: int = 0):
    from geometry_msgs.msg import TransformStamped

    ts = TransformStamped()
    ts.header.frame_id, ts.child_frame_id = parent, child
    ts.header.stamp.sec, ts.header.stamp.nanosec = t_ns // S, t_ns % S
    tr, rot = ts.transform.translation, ts.transform.rotation
    tr.x, tr.y, tr.z = (float(v) for v in xyz)
    rot.x, rot.y, rot.z, rot.w = (float(v) for v in q)
    return ts


# ----------------------------------------------------------------------------------------------- class 1: /tf


def test_hostile_tf_never_stops_the_nodes_nor_changes_the_extrinsic(start_node, ros_peer, msgs):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage

    nodes = [
        start_node("depth_completion_node", params=_params(extrinsic_matrix=None, use_tf=True)),
        start_node("pointcloud_to_depth_node", params={"qos_reliability": "reliable", "min_depth": 0.5}),
    ]
    for node in nodes:
        node.wait_for_log(r"ready:.*extrinsics from tf", timeout=60)
    latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub_static = ros_peer.publisher(TFMessage, "/tf_static", latched)
    pub_tf = ros_peer.publisher(TFMessage, "/tf", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    depth = ros_peer.collector(Image, "/depth")
    sparse = ros_peer.collector(Image, "/sparse_depth")
    sender = Sender(ros_peer, msgs)
    sender.wait(ros_peer, 2)
    for pub in (pub_static, pub_tf):
        ros_peer.wait_for_subscribers(pub, 2)
    ros_peer.wait_for_publishers("/depth")
    pub_static.publish(TFMessage(transforms=[_tf(CAM, LIDAR, (0.0, 0.1, 0.0), Q_CAM_LIDAR)]))
    time.sleep(0.5)
    t = 100 * S
    sender.send(t)
    reference = _depth(depth.wait_stamp(t)[0]), _depth(sparse.wait_stamp(t)[0])
    assert np.isfinite(reference[1]).sum() > 100

    nan = math.nan
    hostile = [
        _tf(CAM, LIDAR, (0, 0, 0), (0, 0, 0, 0)),  # zero quaternion on the edge in use
        _tf(CAM, LIDAR, (0, 0, 0), (nan, 0, 0, 1)),  # NaN quaternion
        _tf(CAM, LIDAR, (nan, 0, 0), Q_CAM_LIDAR),  # NaN translation
        _tf(CAM, LIDAR, (math.inf, 0, 0), Q_CAM_LIDAR),  # infinite translation
        _tf(CAM, LIDAR, (0, 0, 0), (0, 0, 0, 2.0)),  # not normalized
        _tf(LIDAR, LIDAR),  # parent == child
        _tf("", LIDAR),  # empty parent
        _tf(CAM, ""),  # empty child
        _tf(LIDAR, CAM, (0, 0, 0), Q_CAM_LIDAR),  # would close a loop camera <- lidar <- camera
        _tf("/", "x" * 5000),  # empty after '/', over-long name
    ]
    for static, pub in ((False, pub_tf), (True, pub_static)):
        for ts in hostile:
            pub.publish(TFMessage(transforms=[ts]))
        # one message: a valid unrelated transform among bad ones, then a flood of distinct frame names
        pub.publish(TFMessage(transforms=[_tf("map", "odom"), hostile[0], _tf("odom", "odom")]))
        flood = [_tf("flood", f"f{static}{i}", (0, 0, 0), (0, 0, 0, 1), 5 * S) for i in range(2500)]
        pub.publish(TFMessage(transforms=flood))
    time.sleep(1.5)
    for node in nodes:
        assert node.proc.poll() is None, node.output()[-3000:]
        node.wait_for_log(r"refused \d+ transform\(s\).*extrinsics in use are unchanged")
        node.wait_for_log(r"tf buffer bound: shed \d+ frame")
    t += S
    sender.send(t)
    np.testing.assert_array_equal(_depth(depth.wait_stamp(t)[0]), reference[0])
    np.testing.assert_array_equal(_depth(sparse.wait_stamp(t)[0]), reference[1])
    for node in nodes:
        assert node.stop() == 0
        assert not any(bad in node.output() for bad in BAD_LOG), node.output()[-3000:]


def test_tf_buffer_bounds_frames_and_age():
    from depth_completion_ros.ros.extrinsics import TransformBuffer

    now = [0.0]
    buf = TransformBuffer(max_frames=50, max_age_s=10.0, max_stamps=20, clock=lambda: now[0])
    T = np.eye(4)
    buf.set_transform("cam", "lidar", 0, T, static=True)
    buf.lookup("cam", "lidar")  # in use: protected from shedding
    for i in range(400):
        buf.set_transform("flood", f"f{i}", 0, T, static=True)
    assert len(buf) == 50 and buf.shed == 351
    np.testing.assert_array_equal(buf.lookup("cam", "lidar"), T)
    for k in range(100):  # one edge, many stamps: at most max_stamps kept
        buf.set_transform("odom", "base", k * 1000, T, static=False)
    assert len(buf._dynamic["base"][0]) == 20
    now[0] = 30.0  # the dynamic edge was not received for 30 s: shed at the next insertion
    buf.set_transform("cam", "lidar", 0, T, static=True)
    assert "base" not in buf.frames()


# ------------------------------------------------------------------------------------- class 2: checkpoints


def test_checkpoint_with_unbounded_iterations_refused_at_start(start_node, tmp_path):
    from depth_completion_ros.core.checkpoint import save_checkpoint
    from depth_completion_ros.core.model import CSPNModelConfig, CSPNNet

    path = tmp_path / "iter.safetensors"
    model = CSPNNet(CSPNModelConfig(base_width=4, depth=2, max_width=8))
    object.__setattr__(model.config, "iterations", 1_000_000_000)  # as a hand-edited header would say
    save_checkpoint(path, model)
    node = start_node("depth_completion_node", params=_params(method="cspn", checkpoint=str(path)))
    assert node.proc.wait(timeout=60) == 2
    out = node.output()
    assert "refusing to start" in out and "iterations must be in 0..256" in out
    assert "Traceback" not in out


# --------------------------------------------------------------------------------- class 3: camera models


def test_degenerate_camera_info_is_refused_naming_the_field(start_node, ros_peer, msgs):
    from sensor_msgs.msg import Image

    node = start_node("depth_completion_node", params=_params())
    node.wait_for_log(r"ready:", timeout=60)
    depth = ros_peer.collector(Image, "/depth")
    sender = Sender(ros_peer, msgs)
    sender.wait(ros_peer)
    ros_peer.wait_for_publishers("/depth")
    time.sleep(0.5)

    def info(t, **p_entries):
        m = msgs.camera_info(t, CAM, W, H, FX, FY, CX, CY)
        p = list(m.p)
        for index, value in p_entries.items():
            p[int(index[1:])] = value
        m.p = p
        return m

    cases = [
        ({"p5": 0.0}, r"P\[1,1\] \(fy\) = 0"),
        ({"p5": -FY}, r"P\[1,1\] \(fy\) = -100"),
        ({"p0": 1e-30, "p5": 1e-30}, r"P\[0,0\] \(fx\) = 1e-30"),
        ({"p1": 1e6}, r"P\[0,1\] \(skew\) = 1e\+06"),
    ]
    t = 100 * S
    for entries, pattern in cases:
        start = len(node.output())
        sender.send(t, info=info(t, **entries))
        node.wait_for_log(r"frame skipped \(CalibrationError\): CameraInfo .*" + pattern, timeout=15, start=start)
        time.sleep(0.2)
        assert depth.with_stamp(t) is None
        t += S
        sender.send(t)
        depth.wait_stamp(t)
        t += S
    assert node.stop() == 0
    assert "Traceback" not in node.output()


def test_reflection_extrinsic_refused_at_start(start_node):
    reflection = [-v for v in T_CAM_LIDAR[:4]] + T_CAM_LIDAR[4:]  # first row negated: det -1
    node = start_node("depth_completion_node", params=_params(extrinsic_matrix=reflection))
    assert node.proc.wait(timeout=60) == 2
    out = node.output()
    assert "refusing to start" in out and "det +1" in out
    assert "Traceback" not in out


# ------------------------------------------------------------------------------- class 5: run-time params


def test_runtime_iterations_apply_without_reload_and_sigint_mid_frame(start_node, ros_peer, msgs, tmp_path):
    import torch
    from sensor_msgs.msg import Image

    from depth_completion_ros.core.checkpoint import save_checkpoint
    from depth_completion_ros.core.model import CSPNModelConfig, CSPNNet

    path = tmp_path / "small.safetensors"
    torch.manual_seed(0)
    save_checkpoint(path, CSPNNet(CSPNModelConfig(base_width=4, depth=2, max_width=8, iterations=2)))
    node = start_node("depth_completion_node", params=_params(method="cspn", checkpoint=str(path)))
    node.wait_for_log(r"ready:", timeout=60)
    depth = ros_peer.collector(Image, "/depth")
    sender = Sender(ros_peer, msgs)
    sender.wait(ros_peer)
    ros_peer.wait_for_publishers("/depth")
    time.sleep(0.5)
    t = 100 * S
    sender.send(t)
    first = _depth(depth.wait_stamp(t)[0])

    path.unlink()  # the checkpoint is gone: nothing may reload it
    assert all(r.successful for r in _set_parameters(ros_peer, "depth_completion_node", iterations=12))
    t += S
    sender.send(t)
    second = _depth(depth.wait_stamp(t)[0])
    assert not np.allclose(first, second, equal_nan=True), "iterations were ignored"
    assert all(r.successful for r in _set_parameters(ros_peer, "depth_completion_node", max_depth=8.0))
    t += S
    sender.send(t)
    third = _depth(depth.wait_stamp(t)[0])
    assert np.nanmax(third) <= 8.0
    assert "CheckpointError" not in node.output()
    assert re.search(r"ready:.*iterations=2,", node.output())  # the checkpoint's count at start

    # SIGINT while a frame takes 30 s: the node exits at once (the frame is abandoned, nothing published)
    assert all(r.successful for r in _set_parameters(ros_peer, "depth_completion_node", debug_delay_ms=30000))
    t += S
    sender.send(t)
    time.sleep(1.0)
    t0 = time.monotonic()
    assert node.stop(signal.SIGINT, timeout=20.0) == 0
    elapsed = time.monotonic() - t0
    print(f"\nSIGINT during a 30 s frame: the node exited after {elapsed:.2f} s")
    assert elapsed < 10.0, "shutdown waited for the frame"
    assert not any(bad in node.output() for bad in BAD_LOG), node.output()[-3000:]


# ---------------------------------------------------------------------------------- class 6: accounting


def test_every_frame_is_accounted_for(start_node, ros_peer, msgs):
    from depth_completion_ros.msg import NodeStats
    from sensor_msgs.msg import Image

    from depth_completion_ros.ros import compat

    node = start_node("depth_completion_node", params=_params(input_timeout_s=1.0, queue_size=5))
    node.wait_for_log(r"ready:", timeout=60)
    depth = ros_peer.collector(Image, "/depth")
    stats = ros_peer.collector(NodeStats, "/stats")
    sender = Sender(ros_peer, msgs)
    sender.wait(ros_peer)
    ros_peer.wait_for_publishers("/depth")
    time.sleep(0.5)

    def settled(n_sent: int) -> NodeStats:
        """The counters once every sent image has arrived and the node has been idle for input_timeout_s."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            latest = stats.messages[-1] if stats.messages else None
            if latest is not None and latest.frames_received == n_sent and latest.since_output_s > 0:
                return latest
            time.sleep(0.1)
        pytest.fail(f"no settled stats for {n_sent} images: {stats.messages[-1:]}\n{node.output()[-2000:]}")

    def balance(s: NodeStats) -> int:
        return s.frames_processed + s.frames_dropped + s.frames_failed + s.frames_unmatched + s.frames_waiting

    t = 100 * S
    for _ in range(20):  # the cloud is 0.5 s off: never within slop
        sender.send(t, cloud_t=t + S // 2)
        t += S // 20
        time.sleep(0.05)
    node.wait_for_log(r"no output for \d+ s: of \d+ RGB images, 0 processed.* unmatched \(no partners within slop")
    s = settled(20)
    assert s.frames_unmatched >= 15 and s.frames_processed == 0 and balance(s) == 20
    if compat.message_filters is None:  # ours counts every input's unmatched messages (images, infos, clouds)
        assert s.inputs_unmatched >= 30
    else:  # upstream message_filters keeps no counts: the node reports its unmatched images
        assert s.inputs_unmatched == s.frames_unmatched

    assert all(r.successful for r in _set_parameters(ros_peer, "depth_completion_node", debug_delay_ms=300))
    t += 10 * S
    bad = msgs.camera_info(0, CAM, W, H, 0.0, 0.0, 0.0, 0.0)
    for k in range(30):  # a flood while the worker is slow, with a few failing frames
        if k % 10 == 5:
            bad.header.stamp = msgs.stamp(t)
        sender.send(t, info=bad if k % 10 == 5 else None)
        t += S // 10
        time.sleep(0.01)
    s = settled(50)
    assert balance(s) == 50, s
    assert s.frames_processed >= 1 and s.frames_dropped >= 10 and s.frames_waiting <= 5
    assert len(depth.messages) == s.frames_processed
    assert node.stop() == 0


# --------------------------------------------------------------------------------- class 7: shutdown


def test_repeated_sigint_under_load_is_clean(start_node, ros_peer, msgs):
    from sensor_msgs.msg import Image

    cycles = int(os.environ.get("DCR_SHUTDOWN_CYCLES", "10"))
    depth = ros_peer.collector(Image, "/depth")
    sender = Sender(ros_peer, msgs)
    stop = threading.Event()

    def publish() -> None:
        t = 100 * S
        while not stop.is_set():
            sender.send(t)
            t += S // 10
            time.sleep(0.1)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        for cycle in range(cycles):
            node = start_node("depth_completion_node", params=_params(debug_delay_ms=150))
            node.wait_for_log(r"ready:", timeout=60)
            n = len(depth.messages)
            depth.wait(n + 2, timeout=30)  # frames flowing; the worker is inside one most of the time
            code = node.stop(signal.SIGINT, timeout=10.0)
            out = node.output()
            assert code == 0, f"cycle {cycle}: exit {code}\n{out[-3000:]}"
            assert not any(bad in out for bad in BAD_LOG), f"cycle {cycle}:\n{out[-3000:]}"
    finally:
        stop.set()
        thread.join(2.0)


def test_sync_counts_every_message_that_leaves_unmatched():
    from types import SimpleNamespace

    from depth_completion_ros.ros.sync import ApproximateTimeSync

    def msg(t_ns: int):
        return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=t_ns // S, nanosec=t_ns % S)))

    sets = []
    sync = ApproximateTimeSync(2, queue_size=3, slop=0.01, callback=lambda *m: sets.append(m))
    for k in range(10):  # input 1 is always 0.5 s late: nothing matches
        sync.add(0, msg(k * S))
        sync.add(1, msg(k * S + S // 2))
    sync.add(0, msg(20 * S))
    sync.add(0, msg(20 * S))  # same stamp: the first one is replaced
    sync.add(1, msg(20 * S))  # matches the second
    assert len(sets) == 1
    received = [12, 11]
    assert sync.unmatched == [9, 8] and sync.queue_lengths() == [2, 2]
    for i in range(2):  # received = matched + unmatched (pushed out or replaced) + waiting
        assert received[i] == len(sets) + sync.unmatched[i] + sync.queue_lengths()[i]
