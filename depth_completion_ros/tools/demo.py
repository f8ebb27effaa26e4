"""`depth-completion demo`: the main job, end to end over DDS.

1. Builds a rosbag2 from the KITTI frame in ../shared/data/kitti_dc_frame (repeated at 10 Hz), or from a
   generated synthetic scene when that folder is absent.
2. Starts `depth_completion_node` (config/kitti.yaml, the kitti.launch.py remaps) and the bag player as separate
   processes, and subscribes to the node's outputs from this process; all three talk over DDS (shared memory).
3. Writes what came back into OUT: dense depth and sparse depth (KITTI uint16 PNG), confidence (16-bit PNG,
   [0, 1] x 65535), colourized previews, `metrics.json` (KITTI metrics when ground truth exists, the same input
   completed offline through the core API for comparison, and latency from `stats`).

`--lidar` picks how the KITTI scan reaches the node: `offline` (default: de-skewed by `kitti-to-bag`), `live`
(raw scans plus the /tf odometry of `kitti-to-bag --odometry`: the node's deskew stage compensates them) or
`raw` (raw scans, no ego motion); `--param NAME:=VALUE` sets further node parameters (e.g. `deskew:=off`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from depth_completion_ros.core.calibration import KittiCalibration
from depth_completion_ros.core.errors import DepthCompletionError
from depth_completion_ros.core.files import atomic_write_text, read_image, write_image
from depth_completion_ros.core.metrics import compute_metrics, sparsification
from depth_completion_ros.core.units import kitti_png_to_metres, metres_to_kitti_png
from depth_completion_ros.core.visualize import colorize_confidence, colorize_depth
from depth_completion_ros.tools.argtypes import positive_float, positive_int
from depth_completion_ros.tools.kitti_to_bag import (
    TOPICS,
    KittiFrame,
    iter_kitti_frames,
    read_T_velo_from_imu,
    write_bag,
)
from depth_completion_ros.tools.project import default_kitti_dir

__all__ = ["add_arguments", "run"]

NODE_REMAPS = {"rgb/image": TOPICS["image"], "rgb/camera_info": TOPICS["camera_info"], "lidar/points": TOPICS["points"]}
OUTPUTS = ("depth", "confidence", "sparse_depth", "depth_color", "stats")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--out", type=Path, default=Path("out"), help="output directory")
    parser.add_argument(
        "--kitti-dir",
        type=Path,
        help="KITTI frame dir (default: $DEPTH_COMPLETION_DATA or ../shared/data, kitti_dc_frame)",
    )
    parser.add_argument("--synthetic", action="store_true", help="use a generated scene even if KITTI is there")
    parser.add_argument("--frames", type=positive_int, default=20, help="outputs to collect (the bag loops at 10 Hz)")
    parser.add_argument("--method", default="default", choices=("default", "cspn"))
    parser.add_argument("--checkpoint", default="", help="safetensors checkpoint for --method cspn")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=positive_float, default=90.0, help="seconds to wait for the node's outputs")
    parser.add_argument(
        "--lidar",
        choices=("offline", "live", "raw"),
        default="offline",
        help="KITTI scans de-skewed offline, raw + odometry (the node de-skews live), or raw",
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME:=VALUE", help="extra node parameter (repeatable)"
    )


def _build_bag(args: argparse.Namespace, bag: Path) -> tuple[KittiCalibration, np.ndarray, np.ndarray | None, str]:
    """Write the input bag; returns calibration, the RGB frame, ground truth (or None) and a source label."""
    kitti_dir = args.kitti_dir or (None if args.synthetic else default_kitti_dir())
    if kitti_dir is not None and Path(kitti_dir).is_dir():
        offline = args.lidar == "offline"
        calib, frames, _ = iter_kitti_frames(Path(kitti_dir), repeat=args.frames, deskew=offline)
        first = next(iter_kitti_frames(Path(kitti_dir))[1])
        gt_png = Path(kitti_dir) / "depth_completion" / "groundtruth_image_02.png"
        gt = kitti_png_to_metres(read_image(gt_png, cv2.IMREAD_UNCHANGED)) if gt_png.is_file() else None
        T_velo_from_imu = read_T_velo_from_imu(Path(kitti_dir)) if args.lidar == "live" else None
        write_bag(bag, calib, frames, T_velo_from_imu=T_velo_from_imu)
        scans = {"offline": "de-skewed offline", "live": "raw + /tf odometry", "raw": "raw"}[args.lidar]
        return calib, first.rgb, gt, f"KITTI frame {kitti_dir} ({scans} scans)"
    from depth_completion_ros.data.synthetic import generate_scene

    scene = generate_scene(seed=0)
    calib = KittiCalibration(scene.camera, scene.T_camera_from_lidar)
    t0 = 1_700_000_000_000_000_000
    frames = (KittiFrame(scene.rgb, scene.points_lidar, t0 + k * 100_000_000) for k in range(args.frames))
    write_bag(bag, calib, frames)
    return calib, scene.rgb, scene.depth_gt, "synthetic scene (seed 0)"


class _Collector:
    """Subscribes to the node's outputs; keeps the latest of each and the stats history."""

    def __init__(self, node: Any) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from depth_completion_ros.msg import NodeStats

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.latest: dict[str, Any] = {}
        self.counts = dict.fromkeys(OUTPUTS, 0)
        self.stats: list[Any] = []
        self.lock = threading.Lock()
        for name in OUTPUTS:
            cls = NodeStats if name == "stats" else Image
            node.create_subscription(cls, f"/{name}", lambda m, n=name: self._on(n, m), qos)

    def _on(self, name: str, msg: Any) -> None:
        with self.lock:
            self.latest[name] = msg
            self.counts[name] += 1
            if name == "stats":
                self.stats.append(msg)


def _node_command(calib: KittiCalibration, args: argparse.Namespace) -> list[str]:
    from depth_completion_ros.ros.process_env import package_share_path

    matrix = ",".join(repr(float(v)) for v in calib.T_camera_from_velo.ravel())  # ROS wants 1.0, not 1
    cmd = [sys.executable, "-m", "depth_completion_ros.ros.depth_completion_node", "--ros-args"]
    cmd += ["--params-file", str(package_share_path("config/kitti.yaml"))]
    cmd += ["-p", f"extrinsic_matrix:=[{matrix}]", "-p", f"method:={args.method}", "-p", f"device:={args.device}"]
    if args.checkpoint:
        cmd += ["-p", f"checkpoint:={args.checkpoint}"]
    for param in getattr(args, "param", []):
        cmd += ["-p", param]
    for src, dst in NODE_REMAPS.items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def _wait_or_kill(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise DepthCompletionError(f"the node exited ({proc.returncode}):\n{path.read_text()[-2000:]}")
        time.sleep(0.1)
    raise DepthCompletionError(f"the node did not report {text!r} within {timeout:.0f} s; log: {path}")


def run(args: argparse.Namespace) -> int:
    """Run the main job; 0 on success, 1 when no output came back, 2 on bad input."""
    from depth_completion_ros.ros.process_env import ros_process_env

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dcr_demo_"))
    env = ros_process_env(ros_home=str(work / "ros_home"))
    os.environ.update(env)  # this process joins the same isolated DDS domain before rclpy starts
    t_start = time.monotonic()
    try:
        calib, rgb, gt, source = _build_bag(args, work / "bag")
    except (DepthCompletionError, OSError) as exc:
        print(f"depth-completion demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"[demo] input: {source}; bag {work / 'bag'} ({args.frames} frames at 10 Hz, looped)")

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    node_log = out / "node.log"
    procs: list[subprocess.Popen] = []
    with rclpy.init(), node_log.open("wb") as log:
        node = rclpy.create_node("depth_completion_demo")
        collector = _Collector(node)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        try:
            node_proc = subprocess.Popen(_node_command(calib, args), env=env, stdout=log, stderr=subprocess.STDOUT)
            procs.append(node_proc)
            _wait_for(node_log, "ready:", node_proc, 60.0)
            # Looping replay until `frames` outputs came back: robust to how long DDS discovery takes.
            player = subprocess.Popen(
                [sys.executable, "-m", "depth_completion_ros.ros.bag_player", str(work / "bag"), "--loop"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append(player)
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline and collector.counts["stats"] < args.frames:
                time.sleep(0.1)
        except DepthCompletionError as exc:
            print(f"depth-completion demo: error: {exc}", file=sys.stderr)
            return 1
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.send_signal(2)
            for p in procs:
                _wait_or_kill(p)
            executor.shutdown(timeout_sec=1.0)
        with collector.lock:
            latest, counts, stats = dict(collector.latest), dict(collector.counts), list(collector.stats)
    if "depth" not in latest or "confidence" not in latest or "sparse_depth" not in latest:
        print(f"depth-completion demo: error: no output from the node within {args.timeout:.0f} s; see {node_log}")
        return 1
    return _write_results(out, args, rgb, gt, latest, counts, stats, source, time.monotonic() - t_start)


def _write_results(
    out: Path,
    args: argparse.Namespace,
    rgb: np.ndarray,
    gt: np.ndarray | None,
    latest: dict[str, Any],
    counts: dict[str, int],
    stats: list[Any],
    source: str,
    wall_s: float,
) -> int:
    from depth_completion_ros.core.completer import DepthCompleter
    from depth_completion_ros.ros.conversions import image_to_array, image_to_depth_metres
    from depth_completion_ros.ros.params import depth_completion_config, load_params_file
    from depth_completion_ros.ros.process_env import package_share_path

    dense = image_to_depth_metres(latest["depth"])
    confidence = np.nan_to_num(image_to_array(latest["confidence"]).astype(np.float32), nan=0.0)
    sparse = image_to_depth_metres(latest["sparse_depth"])
    write_image(out / "dense_depth.png", metres_to_kitti_png(dense))
    write_image(out / "sparse_depth.png", metres_to_kitti_png(sparse))
    write_image(out / "confidence.png", np.rint(np.clip(confidence, 0, 1) * 65535).astype(np.uint16))
    write_image(out / "dense_preview.png", np.ascontiguousarray(colorize_depth(dense)[..., ::-1]))
    write_image(out / "sparse_preview.png", np.ascontiguousarray(colorize_depth(sparse)[..., ::-1]))
    write_image(out / "confidence_preview.png", np.ascontiguousarray(colorize_confidence(confidence)[..., ::-1]))

    # The same input through the core API offline, with the node's configuration.
    values = load_params_file(package_share_path("config/kitti.yaml"), "depth_completion_node")
    values.update({"method": args.method, "device": args.device, "checkpoint": args.checkpoint})
    completer = DepthCompleter(depth_completion_config(values).completer)
    offline, _ = completer.complete(rgb, sparse)
    both = (dense > 0) & (offline > 0)
    report: dict[str, Any] = {
        "source": source,
        "lidar": getattr(args, "lidar", "offline"),
        "node_params": list(getattr(args, "param", [])),
        "method": args.method,
        "model": completer.model_name,
        "device": completer.device_name,
        "frames_wanted": args.frames,
        "outputs_received": counts,
        "wall_time_s": round(wall_s, 2),
        "node_vs_offline_max_abs_diff_m": float(np.abs(dense[both] - offline[both]).max()) if both.any() else None,
        "node_vs_offline_coverage_equal": bool(np.array_equal(dense > 0, offline > 0)),
    }
    if stats:
        last = stats[-1]
        totals = np.array([s.total_ms for s in stats])
        report["latency_ms"] = {
            "total_p50": float(np.percentile(totals, 50)),
            "total_p99": float(np.percentile(totals, 99)),
            "completion_p50": float(np.percentile([s.completion_ms for s in stats], 50)),
            "projection_p50": float(np.percentile([s.projection_ms for s in stats], 50)),
        }
        report["frames_processed"] = int(last.frames_processed)
        report["frames_dropped"] = int(last.frames_dropped)
        report["frames_failed"] = int(last.frames_failed)
    if gt is not None:
        m_node = compute_metrics(dense, gt)
        m_offline = compute_metrics(offline, gt)
        report["metrics_node"] = m_node.as_dict()
        report["metrics_offline"] = m_offline.as_dict()
        # the projected points themselves, where they and the ground truth exist
        report["metrics_sparse_input"] = compute_metrics(sparse, np.where(sparse > 0, gt, 0.0)).as_dict()
        report["confidence"] = {
            k: v for k, v in sparsification(dense, gt, confidence).items() if k in ("ause_mm", "rmse_ratio_top50")
        }
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2))
    _print_report(report, out)
    return 0


def _print_report(report: dict[str, Any], out: Path) -> None:
    print(f"[demo] {report['source']} -> {out}/ ({report['wall_time_s']} s)")
    print(f"[demo] outputs received: {report['outputs_received']}")
    if "latency_ms" in report:
        lat = report["latency_ms"]
        print(
            f"[demo] node: {report.get('frames_processed')} processed, {report.get('frames_dropped')} dropped, "
            f"{report.get('frames_failed')} failed; latency p50 {lat['total_p50']:.1f} ms, "
            f"p99 {lat['total_p99']:.1f} ms (completion p50 {lat['completion_p50']:.1f} ms)"
        )
    if "metrics_node" in report:
        m, o = report["metrics_node"], report["metrics_offline"]
        print("[demo]          RMSE mm   MAE mm  iRMSE 1/km  iMAE 1/km")
        for name, v in (("node", m), ("offline", o)):
            print(
                f"[demo] {name:8s} {v['rmse_mm']:8.1f} {v['mae_mm']:8.1f} "
                f"{v['irmse_per_km']:11.3f} {v['imae_per_km']:10.3f}"
            )
        print(f"[demo] confidence: RMSE(top 50 %) / RMSE(all) = {report['confidence']['rmse_ratio_top50']:.3f}")
    print(f"[demo] node vs offline core API: max |diff| = {report['node_vs_offline_max_abs_diff_m']} m")
    print(f"[demo] wrote dense_depth.png, confidence.png, sparse_depth.png, *_preview.png, metrics.json in {out}/")
