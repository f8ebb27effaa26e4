"""Soak of depth_completion_node at KITTI size, 10 Hz, with a hostile /tf publisher beside it (issue 12).

The node runs as its own process with config/kitti.yaml and takes its extrinsics from tf (this driver latches the
KITTI camera <- velo transform on /tf_static).  The driver sends the shared KITTI frame (RGB 1242x375, CameraInfo,
122k-point cloud; a synthetic scene when ../shared is absent) at `--rate` Hz, stamped with the wall clock.
Phases: `--quiet` s without the hostile publisher (the baseline latency of this run), then `--duration` s with a
second process flooding /tf and /tf_static with bad transforms (zero / NaN / non-unit quaternions, NaN
translations, parent == child, empty names, loops, bad values for the edge in use) and new frame names (far
beyond the buffer's bound).  Reported: RSS growth after warm-up (`--warmup` s into the hostile phase), latency
per minute (creep = last minute's p50 vs the first one's after warm-up), the quiet-phase baseline, and the fate
of every frame sent: received by the node = processed + superseded + failed + unmatched + waiting (from its
`stats`), outputs received here = processed.  Also the core API's per-frame time in this process.
Usage: .venv/bin/python benchmarks/soak_hostile_tf.py [--duration 600] [--rate 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import bench_frame, print_table, time_call, write_json

from depth_completion_ros.core.allocator import configure_allocator
from depth_completion_ros.ros.process_env import package_share_path, ros_process_env

CAMERA_FRAME, LIDAR_FRAME = "kitti_camera_optical", "velo_link"

HOSTILE = textwrap.dedent(
    """
    import math, sys, time, rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage
    rate = float(sys.argv[1]); new_per_msg = int(sys.argv[2]); cam, velo = sys.argv[3], sys.argv[4]
    rclpy.init(); node = rclpy.create_node('hostile_tf')
    pub = node.create_publisher(TFMessage, '/tf', QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    pub_static = node.create_publisher(TFMessage, '/tf_static', QoSProfile(
        depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    def tf(parent, child, xyz=(0.0, 0.0, 0.0), q=(0.0, 0.0, 0.0, 1.0), t=None):
        ts = TransformStamped(); ts.header.frame_id, ts.child_frame_id = parent, child
        t = time.time() if t is None else t
        ts.header.stamp.sec, ts.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
        ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = xyz
        r = ts.transform.rotation; r.x, r.y, r.z, r.w = q
        return ts
    nan, inf = math.nan, math.inf
    bad = [tf(cam, velo, q=(0.0, 0.0, 0.0, 0.0)), tf(cam, velo, q=(nan, 0.0, 0.0, 1.0)),
           tf(cam, velo, xyz=(nan, 0.0, 0.0)), tf(cam, velo, xyz=(inf, 0.0, 0.0)),
           tf(cam, velo, q=(0.0, 0.0, 0.0, 3.0)),
           tf(velo, velo), tf('', velo), tf(cam, ''), tf(velo, cam), tf('/', 'x' * 3000)]
    k = 0; sent = 0
    while rclpy.ok():
        now = time.time()
        for b in bad:
            b.header.stamp.sec, b.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        fresh = [tf('hostile_root', f'h{k}_{i}', t=now) for i in range(new_per_msg)]
        pub.publish(TFMessage(transforms=bad + fresh + [tf('map', 'odom', t=now)]))
        if k % 10 == 0:
            static = [tf('hostile_static', f's{k}_{i}') for i in range(new_per_msg)]
            pub_static.publish(TFMessage(transforms=bad + static))
        k += 1; sent += len(bad) + new_per_msg
        time.sleep(1.0 / rate)
    """
)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="hostile phase, seconds")
    ap.add_argument("--quiet", type=float, default=30.0, help="baseline phase without the hostile publisher, s")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds into the hostile phase before RSS is taken")
    ap.add_argument("--rate", type=float, default=10.0, help="frames per second")
    ap.add_argument("--hostile-rate", type=float, default=20.0, help="hostile /tf messages per second")
    ap.add_argument("--new-frames", type=int, default=50, help="new frame names per hostile message")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    configure_allocator()
    env = ros_process_env()
    os.environ.update(env)

    import rclpy
    from depth_completion_ros.msg import NodeStats
    from geometry_msgs.msg import TransformStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from depth_completion_ros.core.completer import DepthCompleter
    from depth_completion_ros.core.projection import project_points
    from depth_completion_ros.ros.conversions import (
        array_to_image,
        camera_model_to_camera_info,
        pointcloud2_to_xyz,
        xyz_to_pointcloud2,
    )
    from depth_completion_ros.ros.extrinsics import quat_xyzw_from_matrix
    from depth_completion_ros.ros.params import depth_completion_config, load_params_file

    calib, rgb, scan, source = bench_frame()
    T = np.asarray(calib.T_camera_from_velo, dtype=np.float64)

    values = load_params_file(package_share_path("config/kitti.yaml"), "depth_completion_node")
    completer = DepthCompleter(depth_completion_config(values).completer)
    cloud_msg = xyz_to_pointcloud2(scan[:, :3], Header(frame_id=LIDAR_FRAME), fields="xyzi", intensity=scan[:, 3])

    def core_pipeline() -> None:
        pts = pointcloud2_to_xyz(cloud_msg)
        sparse = project_points(pts, T, calib.camera, min_depth=0.5, max_depth=90.0)
        completer.complete(rgb, sparse)

    core = time_call(core_pipeline, 20)

    cmd = [sys.executable, "-m", "depth_completion_ros.ros.depth_completion_node", "--ros-args"]
    cmd += ["--params-file", str(package_share_path("config/kitti.yaml")), "-p", "publish_points:=false"]
    log = Path(env["ROS_HOME"]) / "soak_node.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    node_proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    hostile_proc: subprocess.Popen | None = None
    results: dict[str, object] = {"source": source, "core_pipeline": core, "args": vars(args) | {"json": None}}
    sends: dict[int, float] = {}  # stamp ns -> monotonic send time
    outputs: list[tuple[float, float]] = []  # (monotonic receipt, latency s), first receipt of each stamp
    seen: set[int] = set()
    duplicates = [0]  # depth messages received again with a stamp already received (DDS redelivery)
    stats: list = []
    lock = threading.Lock()
    try:
        with rclpy.init():
            node = rclpy.create_node("soak_driver")
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            pubs = {
                "image": node.create_publisher(Image, "/rgb/image", qos),
                "info": node.create_publisher(CameraInfo, "/rgb/camera_info", qos),
                "cloud": node.create_publisher(PointCloud2, "/lidar/points", qos),
            }
            latched = QoSProfile(
                depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
            )
            pub_static = node.create_publisher(TFMessage, "/tf_static", latched)
            ts = TransformStamped()
            ts.header.frame_id, ts.child_frame_id = CAMERA_FRAME, LIDAR_FRAME
            ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = T[:3, 3].tolist()
            q = quat_xyzw_from_matrix(T[:3, :3])
            r = ts.transform.rotation
            r.x, r.y, r.z, r.w = (float(v) for v in q)
            pub_static.publish(TFMessage(transforms=[ts]))

            def on_depth(msg: Image) -> None:
                now = time.monotonic()
                key = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                with lock:
                    sent_at = sends.get(key)
                    if key in seen:
                        duplicates[0] += 1
                    elif sent_at is not None:
                        seen.add(key)
                        outputs.append((now, now - sent_at))

            node.create_subscription(Image, "/depth", on_depth, qos)
            node.create_subscription(NodeStats, "/stats", stats.append, qos)
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
            image_msg = array_to_image(rgb, "rgb8", Header(frame_id=CAMERA_FRAME))
            info_msg = camera_model_to_camera_info(calib.camera, Header(frame_id=CAMERA_FRAME))

            def send() -> None:
                now = time.time()
                sec, nsec = int(now), int((now - int(now)) * 1e9)
                for msg in (info_msg, cloud_msg, image_msg):
                    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nsec
                with lock:
                    sends[sec * 1_000_000_000 + nsec] = time.monotonic()
                pubs["info"].publish(info_msg)
                pubs["cloud"].publish(cloud_msg)
                pubs["image"].publish(image_msg)

            t_start = time.monotonic()
            t_hostile = t_start + args.quiet
            t_end = t_hostile + args.duration
            rss_samples: list[tuple[float, float]] = []
            sent = 0
            next_rss = t_start
            while True:
                now = time.monotonic()
                if now >= t_end:
                    break
                if hostile_proc is None and now >= t_hostile:
                    hostile_argv = [str(args.hostile_rate), str(args.new_frames), CAMERA_FRAME, LIDAR_FRAME]
                    hostile_proc = subprocess.Popen(
                        [sys.executable, "-c", HOSTILE, *hostile_argv],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                if now >= next_rss:
                    rss_samples.append((now - t_start, _rss_mb(node_proc.pid)))
                    next_rss += 10.0
                if node_proc.poll() is not None:
                    print(f"node exited ({node_proc.returncode}):\n{log.read_text()[-3000:]}", file=sys.stderr)
                    return 1
                send()
                sent += 1
                time.sleep(max(0.0, t_start + sent / args.rate - time.monotonic()))
            if hostile_proc is not None:
                hostile_proc.send_signal(2)
                hostile_proc.wait(10)
            # settle: the node publishes counters-only stats once it has been idle for input_timeout_s
            deadline = time.monotonic() + 30
            final = None
            while time.monotonic() < deadline:
                final = stats[-1] if stats else None
                if final is not None and final.since_output_s > 0 and final.frames_received >= sent:
                    break
                time.sleep(0.2)
            rss_end = _rss_mb(node_proc.pid)
            alive = node_proc.poll() is None
            executor.shutdown(timeout_sec=1.0)
    finally:
        if hostile_proc is not None and hostile_proc.poll() is None:
            hostile_proc.kill()
        if node_proc.poll() is None:
            node_proc.send_signal(2)
            try:
                node_proc.wait(15)
            except subprocess.TimeoutExpired:
                node_proc.kill()
    node_log = log.read_text(errors="replace")

    # ------------------------------------------------------------------ figures
    out_t = np.array([t - t_start for t, _ in outputs])
    out_lat = np.array([lat for _, lat in outputs]) * 1e3
    quiet = out_lat[out_t < args.quiet]
    rows = []
    minute_p50 = []
    edges = [0.0, args.quiet, *np.arange(args.quiet + 60.0, args.quiet + args.duration, 60.0)]
    edges.append(args.quiet + args.duration + 10.0)
    for a, b in itertools.pairwise(edges):
        sel = out_lat[(out_t >= a) & (out_t < b)]
        rss = [m for s, m in rss_samples if a <= s < b]
        label = "quiet (baseline)" if a == 0.0 else f"hostile {a - args.quiet:.0f}-{b - args.quiet:.0f} s"
        p50 = float(np.percentile(sel, 50)) if len(sel) else float("nan")
        p99 = float(np.percentile(sel, 99)) if len(sel) else float("nan")
        rows.append([label, len(sel), p50, p99, float(rss[-1]) if rss else float("nan")])
        if a >= args.quiet + args.warmup:
            minute_p50.append(p50)
    rss_warm = next((m for s, m in rss_samples if s >= args.quiet + args.warmup), float("nan"))
    growth = (rss_end - rss_warm) / rss_warm
    print_table(
        f"soak: depth_completion_node, {source} 1242x375, {len(scan)} points, {args.rate:g} Hz, extrinsics from tf, "
        f"hostile /tf {args.hostile_rate:g} msg/s ({args.new_frames} new frame names each) for {args.duration:.0f} s",
        ["phase", "outputs", "latency p50 ms", "p99 ms", "node RSS MB"],
        rows,
    )
    creep = (minute_p50[-1] - minute_p50[0]) if len(minute_p50) >= 2 else float("nan")
    print(f"core API in-process baseline: {core['median_ms']:.1f} ms/frame (IQR {core['iqr_ms']:.1f})")
    print(f"quiet-phase latency p50 {np.percentile(quiet, 50) if len(quiet) else float('nan'):.1f} ms (baseline)")
    print(
        f"latency creep after warm-up: p50 first minute {minute_p50[0] if minute_p50 else float('nan'):.1f} ms, "
        f"last minute {minute_p50[-1] if minute_p50 else float('nan'):.1f} ms ({creep:+.1f} ms)"
    )
    print(f"node RSS: {rss_warm:.1f} MB after warm-up, {rss_end:.1f} MB at the end ({100 * growth:+.2f} %)")
    acc = {}
    if final is not None:
        acc = {
            "sent": sent,
            "received": int(final.frames_received),
            "processed": int(final.frames_processed),
            "superseded": int(final.frames_dropped),
            "failed": int(final.frames_failed),
            "unmatched": int(final.frames_unmatched),
            "waiting": int(final.frames_waiting),
            "outputs_received_here": len(outputs),
        }
        balance = sum(acc[k] for k in ("processed", "superseded", "failed", "unmatched", "waiting"))
        acc["accounted"] = balance
        print(
            f"frames: sent {sent}, received by the node {acc['received']} = processed {acc['processed']} + "
            f"superseded {acc['superseded']} + failed {acc['failed']} + unmatched {acc['unmatched']} + waiting "
            f"{acc['waiting']} (= {balance}); depth outputs received here {len(outputs)} distinct stamps "
            f"(+ {duplicates[0]} duplicate deliveries)"
        )
        acc["duplicate_deliveries"] = duplicates[0]
        print(
            "every frame accounted for: "
            + ("yes" if sent == acc["received"] == balance and len(outputs) == acc["processed"] else "NO")
        )
    else:
        print("frames: no settled stats message from the node")
    refused = node_log.count("refused")
    shed = node_log.count("tf buffer bound")
    print(
        f"node alive at the end: {alive}; tf warnings logged: {refused} refused, {shed} shed (throttled, 5 s); "
        f"tracebacks: {node_log.count('Traceback')}"
    )
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    results.update(
        {
            "phases": rows,
            "rss_mb": {"after_warmup": rss_warm, "end": rss_end, "growth": growth, "samples": rss_samples},
            "creep_ms": creep,
            "frames": acc,
            "alive": alive,
            "loadavg": os.getloadavg(),
        }
    )
    write_json(args.json, results)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
