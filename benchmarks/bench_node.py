"""End-to-end benchmark of depth_completion_node at KITTI size: message in -> depth out over DDS.

A publisher in this process sends the shared KITTI frame (RGB 1242x375, CameraInfo, 122k-point cloud; a
synthetic scene when ../shared is absent) stamped with the wall clock at each send; the node runs as its own
process with config/kitti.yaml. Latency = depth received - input stamp (p50 / p99); sustained rate = depth
outputs per second; drops from the node's `stats`; RSS of the node process. Baseline in the same run: the
same frame through the core API in this process (decode + project + complete), i.e. the node's overhead.
With `--load N`, N separate busy-loop processes keep N cores busy during the timed runs (as other nodes on a robot
would); drops are reported by reason, as far as the node's `stats` message gives reasons.
Usage: .venv/bin/python benchmarks/bench_node.py [--seconds 10] [--rates 10 30] [--all-outputs] [--load N]
    [--json out.json] [--method default|cspn|penet|enet|cspn-nyu] [--checkpoint X.safetensors]
    [--device auto|cpu|cuda] [--fp16]
A published method without --checkpoint runs with seeded random weights (written to a temporary checkpoint):
timing only, the depth is meaningless.
"""

from __future__ import annotations

import argparse
import atexit
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import bench_frame, machine_line, print_table, time_call, write_json

from depth_completion_ros.core.allocator import configure_allocator
from depth_completion_ros.ros.params import PUBLISHED_METHODS
from depth_completion_ros.ros.process_env import package_share_path, ros_process_env


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


_DROP_REASONS = (
    ("frames_dropped", "superseded"),  # replaced by a newer set while the worker was busy
    ("frames_failed", "failed"),  # rejected for bad input
    ("frames_unmatched", "unmatched"),  # left the synchronizer without partners (newer stats messages only)
)
"""(NodeStats counter, column name) of the drop reasons; a counter the message lacks is reported as n/a."""


def _start_load(n: int) -> list[subprocess.Popen]:
    """`n` separate processes, each keeping one core busy until stopped."""
    return [subprocess.Popen([sys.executable, "-c", "while True:\n    pass"]) for _ in range(n)]


def _stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0])
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--all-outputs",
        action="store_true",
        help="also subscribe to depth_color, sparse_depth and points (as rviz would), which the node builds lazily",
    )
    ap.add_argument("--method", default="default", help="node parameter method (default: the weight-free default)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="node parameter checkpoint")
    ap.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="node parameter device")
    ap.add_argument("--fp16", action="store_true", help="node parameter fp16 (published models on CUDA)")
    ap.add_argument("--load", type=int, default=0, help="keep N cores busy with separate processes during the runs")
    args = ap.parse_args()
    if args.load < 0:
        print("bench_node: --load must be >= 0", file=sys.stderr)
        return 2
    configure_allocator()
    tmp_dir = tempfile.TemporaryDirectory(prefix="bench_node_")
    checkpoint, weights = args.checkpoint, ""
    if args.method in PUBLISHED_METHODS and checkpoint is None:
        checkpoint, weights = random_weights_checkpoint(args.method, Path(tmp_dir.name)), " (random weights)"
    overrides: dict[str, object] = {"method": args.method}
    if checkpoint is not None:
        overrides["checkpoint"] = str(checkpoint)
    if args.device is not None:
        overrides["device"] = args.device
    if args.fp16:
        overrides["fp16"] = True
    env = ros_process_env()
    os.environ.update(env)

    import rclpy
    from depth_completion_ros.msg import NodeStats
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header

    from depth_completion_ros.core.completer import DepthCompleter
    from depth_completion_ros.core.projection import project_points
    from depth_completion_ros.ros.conversions import (
        array_to_image,
        camera_model_to_camera_info,
        pointcloud2_to_xyz,
        xyz_to_pointcloud2,
    )
    from depth_completion_ros.ros.params import depth_completion_config, load_params_file

    calib, rgb, scan, source = bench_frame()

    # Baseline: the same work through the core API in one process (no DDS, no messages).
    values = load_params_file(package_share_path("config/kitti.yaml"), "depth_completion_node")
    completer = DepthCompleter(depth_completion_config({**values, **overrides}).completer)
    cloud_msg = xyz_to_pointcloud2(scan[:, :3], Header(frame_id="velo_link"), fields="xyzi", intensity=scan[:, 3])

    def core_pipeline() -> None:
        pts = pointcloud2_to_xyz(cloud_msg)
        sparse = project_points(pts, calib.T_camera_from_velo, calib.camera, min_depth=0.5, max_depth=90.0)
        completer.complete(rgb, sparse, calib.camera)

    core = time_call(core_pipeline, 20)

    matrix = ",".join(repr(float(v)) for v in calib.T_camera_from_velo.ravel())
    cmd = [sys.executable, "-m", "depth_completion_ros.ros.depth_completion_node", "--ros-args"]
    cmd += ["--params-file", str(package_share_path("config/kitti.yaml")), "-p", f"extrinsic_matrix:=[{matrix}]"]
    cmd += ["-p", "publish_points:=false"]
    for key, value in overrides.items():
        cmd += ["-p", f"{key}:={str(value).lower() if isinstance(value, bool) else value}"]
    log = Path(env["ROS_HOME"]) / "bench_node.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    node_proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    rows, results = [], {"source": source, "core_pipeline": core, "method": args.method + weights}
    results["device"] = completer.device_name
    with rclpy.init():
        node = rclpy.create_node("bench_node_driver")
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {
            "image": node.create_publisher(Image, "/rgb/image", qos),
            "info": node.create_publisher(CameraInfo, "/rgb/camera_info", qos),
            "cloud": node.create_publisher(PointCloud2, "/lidar/points", qos),
        }
        latencies: list[float] = []
        stats: list = []

        def on_depth(msg: Image) -> None:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            latencies.append(time.time() - stamp)

        node.create_subscription(Image, "/depth", on_depth, qos)
        node.create_subscription(NodeStats, "/stats", stats.append, qos)
        if args.all_outputs:
            for topic, kind in (("/depth_color", Image), ("/sparse_depth", Image), ("/points", PointCloud2)):
                node.create_subscription(kind, topic, lambda _msg: None, qos)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        while "ready:" not in log.read_text(errors="replace"):
            if node_proc.poll() is not None:
                print(log.read_text(), file=sys.stderr)
                return 1
            time.sleep(0.1)
        while any(p.get_subscription_count() == 0 for p in pubs.values()):
            time.sleep(0.05)
        time.sleep(1.0)
        image_msg = array_to_image(rgb, "rgb8", Header(frame_id="kitti_camera_optical"))
        info_msg = camera_model_to_camera_info(calib.camera, Header(frame_id="kitti_camera_optical"))

        def send() -> None:
            now = time.time()
            sec, nsec = int(now), int((now - int(now)) * 1e9)
            for msg in (info_msg, cloud_msg, image_msg):
                msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nsec
            pubs["info"].publish(info_msg)
            pubs["cloud"].publish(cloud_msg)
            pubs["image"].publish(image_msg)

        for _ in range(5):  # warm-up
            send()
            time.sleep(0.2)
        time.sleep(1.0)
        rss0 = _rss_mb(node_proc.pid)
        load_procs = _start_load(args.load)
        atexit.register(_stop_load, load_procs)  # also when the run fails
        time.sleep(1.0 if args.load else 0.0)
        for rate in args.rates:
            latencies.clear()
            n0 = len(stats)
            before = stats[-1] if stats else None
            t0 = time.monotonic()
            sent = 0
            while time.monotonic() - t0 < args.seconds:
                send()
                sent += 1
                next_t = t0 + sent / rate
                time.sleep(max(0.0, next_t - time.monotonic()))
            time.sleep(1.0)
            got = len(latencies)
            lat = np.array(latencies) * 1e3
            new_stats = stats[n0:]
            drops = {}
            for field, name in _DROP_REASONS:
                if not hasattr(NodeStats, field):
                    drops[name] = "n/a"
                    continue
                after = new_stats[-1] if new_stats else before
                drops[name] = int(getattr(after, field) - getattr(before, field)) if after and before else 0
            unaccounted = sent - got - sum(v for v in drops.values() if isinstance(v, int))
            completion = np.median([s.completion_ms for s in new_stats]) if new_stats else float("nan")
            decode_project = (
                np.median([s.decode_ms + s.projection_ms for s in new_stats]) if new_stats else float("nan")
            )
            publish = np.median([s.publish_ms for s in new_stats]) if new_stats else float("nan")
            row = [
                f"{rate:.0f} Hz in",
                sent,
                got,
                got / args.seconds,
                float(np.percentile(lat, 50)) if got else float("nan"),
                float(np.percentile(lat, 99)) if got else float("nan"),
                float(decode_project),
                float(completion),
                float(publish),
                *drops.values(),
                unaccounted,
            ]
            rows.append(row)
            results[f"rate_{rate:g}"] = dict(
                zip(
                    [
                        "input",
                        "sent",
                        "received",
                        "out_hz",
                        "p50_ms",
                        "p99_ms",
                        "decode_project_ms",
                        "completion_ms",
                        "publish_ms",
                        *(f"dropped_{name}" for _, name in _DROP_REASONS),
                        "unaccounted",
                    ],
                    row,
                    strict=True,
                )
            )
        _stop_load(load_procs)
        rss1 = _rss_mb(node_proc.pid)
        executor.shutdown(timeout_sec=1.0)
    node_proc.send_signal(2)
    node_proc.wait(15)
    print_table(
        f"depth_completion_node end to end, {source} 1242x375, {len(scan)} points, method {args.method}{weights} "
        f"on {completer.device_name}{' fp16' if args.fp16 else ''}, "
        f"{'all outputs subscribed' if args.all_outputs else 'depth + stats subscribed'}, "
        f"{args.load} busy load process(es) "
        f"(core API in-process baseline: {core['median_ms']:.1f} ms/frame = {1e3 / core['median_ms']:.1f} Hz)",
        [
            "input",
            "sent",
            "depth out",
            "out Hz",
            "latency p50 ms",
            "p99 ms",
            "decode+project ms",
            "completion ms",
            "publish ms",
            *(f"drop {name}" for _, name in _DROP_REASONS),
            "unaccounted",
        ],
        rows,
    )
    print(f"node RSS: {rss0:.0f} MB after warm-up, {rss1:.0f} MB at the end ({100 * (rss1 - rss0) / rss0:+.1f} %)")
    print("unaccounted = sent - depth out - the counted drops (lost in transport, or a reason the stats lack)")
    results["rss_mb"] = {"after_warmup": rss0, "end": rss1}
    results["load_processes"] = args.load
    results["machine_load"] = machine_line()
    write_json(args.json, results)
    tmp_dir.cleanup()
    return 0


def random_weights_checkpoint(method: str, folder: Path, seed: int = 0) -> Path:
    """A checkpoint of published model `method` with seeded random weights (for timing only)."""
    import torch

    from depth_completion_ros.core.published import get_architecture
    from depth_completion_ros.core.published.importer import save_published

    arch = get_architecture(method)
    torch.manual_seed(seed)
    path = folder / f"{method}_random.safetensors"
    save_published(path, arch, arch.build(arch.default_config), arch.default_config, extra={"source": "random"})
    return path


if __name__ == "__main__":
    sys.exit(main())
