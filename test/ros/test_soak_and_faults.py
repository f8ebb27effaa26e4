"""Soak, faults and start-up failures of depth_completion_node as a real process (issue 6).

- soak: DCR_SOAK_FRAMES frames (default 2000 in CI; 10000 for the full run) through the node in lock step at a
  small size; RSS growth after warm-up < 2 %, no latency creep, every frame processed;
- the input publisher killed (SIGKILL) and restarted mid-stream: the node resumes by itself;
- a CUDA request on a machine without CUDA: a warning, then CPU;
- bad checkpoints (truncated, another model's shapes, a pickle that would run code): a clear refusal at start,
  and the pickle is never executed.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

W, H = 320, 96
F, CX, CY = 200.0, 159.5, 47.5
CAM, LIDAR = "camera_optical", "lidar"
T_CAM_LIDAR = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
S = 1_000_000_000


def _points(n: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.uniform(5, 15, n)
    return np.column_stack([x, rng.uniform(-0.7, 0.7, n) * x, rng.uniform(-0.2, 0.2, n) * x]).astype(np.float32)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def _node_params(**extra):
    params = {
        "input_type": "pointcloud",
        "extrinsic_matrix": T_CAM_LIDAR,
        "min_depth": 0.5,
        "max_depth": 50.0,
        "device": "cpu",
        "qos_reliability": "reliable",
        "publish_color": False,
    }
    params.update(extra)
    return params


@pytest.mark.slow
def test_soak(start_node, ros_peer, msgs):
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    frames = int(os.environ.get("DCR_SOAK_FRAMES", "2000"))
    node = start_node("depth_completion_node", params=_node_params())
    node.wait_for_log(r"ready:", timeout=40)
    pubs = [
        ros_peer.publisher(CameraInfo, "/rgb/camera_info"),
        ros_peer.publisher(PointCloud2, "/lidar/points"),
        ros_peer.publisher(Image, "/rgb/image"),
    ]
    depth = ros_peer.collector(Image, "/depth")
    for pub in pubs:
        ros_peer.wait_for_subscribers(pub)
    ros_peer.wait_for_publishers("/depth")
    time.sleep(0.5)
    rgb = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    info, cloud, image = msgs.camera_info(0, CAM, W, H, F, F, CX, CY), msgs.cloud(_points(), 0, LIDAR), None
    image = msgs.image(rgb, 0, CAM)
    latencies, rss = [], []
    warmup = min(300, frames // 5)
    t0 = time.monotonic()
    for k in range(frames):
        t = (1000 + k) * (S // 10)
        for m in (info, cloud, image):
            m.header.stamp = msgs.stamp(t)
        sent = time.monotonic()
        for pub, m in zip(pubs, (info, cloud, image), strict=True):
            pub.publish(m)
        latencies.append(depth.wait_stamp(t)[1] - sent)
        if len(depth.messages) > 50:
            depth.clear()
        if k == warmup:
            rss.append(_rss_mb(node.proc.pid))
    rss.append(_rss_mb(node.proc.pid))
    wall = time.monotonic() - t0
    lat = np.array(latencies) * 1e3
    block = max(100, frames // 10)
    first, last = np.median(lat[warmup : warmup + block]), np.median(lat[-block:])
    growth = (rss[1] - rss[0]) / rss[0]
    print(
        f"\nsoak: {frames} frames {W}x{H} in {wall:.1f} s ({frames / wall:.0f} Hz lock-step); latency p50 first "
        f"{first:.2f} ms, last {last:.2f} ms; p99 {np.percentile(lat, 99):.2f} ms; RSS {rss[0]:.1f} -> {rss[1]:.1f} MB "
        f"({100 * growth:+.2f} %)"
    )
    assert growth < 0.02
    assert last < 1.5 * first + 2.0
    assert node.proc.poll() is None
    assert node.stop(signal.SIGTERM) == 0
    assert "Traceback" not in node.output()


PUBLISHER = textwrap.dedent(
    """
    import sys, time, numpy as np, rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
    from std_msgs.msg import Header
    from builtin_interfaces.msg import Time
    t_start = int(sys.argv[1])
    rclpy.init(); node = rclpy.create_node('input_publisher')
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    p_info = node.create_publisher(CameraInfo, '/rgb/camera_info', qos)
    p_pts = node.create_publisher(PointCloud2, '/lidar/points', qos)
    p_img = node.create_publisher(Image, '/rgb/image', qos)
    rng = np.random.default_rng(0); x = rng.uniform(5, 15, 3000)
    pts = np.column_stack([x, rng.uniform(-.7, .7, 3000) * x, rng.uniform(-.2, .2, 3000) * x]).astype(np.float32)
    k = 0
    while True:
        t = t_start + k * 100_000_000; k += 1
        stamp = Time(sec=t // 10**9, nanosec=t % 10**9)
        info = CameraInfo(header=Header(stamp=stamp, frame_id='camera_optical'), width=@W@, height=@H@)
        info.k = [@F@, 0.0, @CX@, 0.0, @F@, @CY@, 0.0, 0.0, 1.0]
        info.p = [@F@, 0.0, @CX@, 0.0, 0.0, @F@, @CY@, 0.0, 0.0, 0.0, 1.0, 0.0]
        info.d = [0.0] * 5; info.distortion_model = 'plumb_bob'
        cloud = PointCloud2(header=Header(stamp=stamp, frame_id='lidar'), height=1, width=len(pts))
        cloud.fields = [PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate('xyz')]
        cloud.point_step = 12; cloud.row_step = 12 * len(pts); cloud.is_dense = True; cloud.data = pts.tobytes()
        img = Image(header=Header(stamp=stamp, frame_id='camera_optical'), height=@H@, width=@W@, encoding='rgb8',
                    step=@W@ * 3, data=bytes(@W@ * @H@ * 3))
        p_info.publish(info); p_pts.publish(cloud); p_img.publish(img)
        time.sleep(0.1)
    """
)
for _key, _value in {"@W@": W, "@H@": H, "@F@": F, "@CX@": CX, "@CY@": CY}.items():
    PUBLISHER = PUBLISHER.replace(_key, repr(_value))


def test_publisher_restart_and_clean_shutdown(start_node, ros_env, ros_peer):
    from sensor_msgs.msg import Image

    node = start_node("depth_completion_node", params=_node_params())
    node.wait_for_log(r"ready:", timeout=40)
    depth = ros_peer.collector(Image, "/depth")

    def publisher(t_start: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", PUBLISHER, str(t_start)], env=ros_env)

    first = publisher(100 * S)
    try:
        deadline = time.monotonic() + 30
        while not any(depth.stamp_of(m) >= 100 * S for m in list(depth.messages)):
            assert time.monotonic() < deadline, f"no output from the first publisher:\n{node.output()[-2000:]}"
            time.sleep(0.05)
    finally:
        first.kill()  # SIGKILL: no goodbye to DDS
        first.wait()
    time.sleep(1.0)
    second = publisher(500 * S)
    try:
        deadline = time.monotonic() + 30
        while not any(depth.stamp_of(m) >= 500 * S for m in list(depth.messages)):
            assert time.monotonic() < deadline, f"node did not resume after the restart:\n{node.output()[-2000:]}"
            time.sleep(0.05)
    finally:
        second.kill()
        second.wait()
    t0 = time.monotonic()
    assert node.stop(signal.SIGINT) == 0
    assert time.monotonic() - t0 < 5.0
    assert "Traceback" not in node.output()


def test_cuda_request_without_cuda_falls_back_to_cpu(start_node, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from depth_completion_ros.core.checkpoint import save_checkpoint
    from depth_completion_ros.core.model import CSPNModelConfig, CSPNNet

    cfg = CSPNModelConfig(base_width=8, depth=2, iterations=2)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(ckpt, CSPNNet(cfg), cfg)
    node = start_node("depth_completion_node", params=_node_params(method="cspn", checkpoint=str(ckpt), device="cuda"))
    node.wait_for_log(r"ready:.*device=cpu", timeout=60)
    assert "CUDA is not available" in node.output()
    assert node.stop() == 0


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bad_checkpoints_are_refused_clearly(start_node, tmp_path):
    from depth_completion_ros.core.checkpoint import save_checkpoint
    from depth_completion_ros.core.model import CSPNModelConfig, CSPNNet

    good = tmp_path / "good.safetensors"
    save_checkpoint(good, CSPNNet(CSPNModelConfig(base_width=8, depth=2)), CSPNModelConfig(base_width=8, depth=2))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    other = tmp_path / "other.safetensors"
    other_cfg = CSPNModelConfig(base_width=16, depth=3)
    save_checkpoint(other, CSPNNet(other_cfg), CSPNModelConfig(base_width=8, depth=2))  # shapes disagree with config
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump({"state_dict": {"x": _Evil(str(marker))}}, f)
    for path, pattern in (
        (truncated, r"checkpoint"),
        (other, r"shape|mismatch|missing|unexpected"),
        (evil, r"safetensors|pickle|weights_only|checkpoint"),
    ):
        node = start_node("depth_completion_node", params=_node_params(method="cspn", checkpoint=str(path)))
        node.proc.wait(60)
        out = node.output()
        assert node.proc.returncode == 2, out[-2000:]
        assert "refusing to start" in out
        assert re.search(pattern, out, re.IGNORECASE), out[-2000:]
        assert "Traceback" not in out
    assert not marker.exists()  # the pickle was never executed
