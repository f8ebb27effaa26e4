"""Start-up of depth_completion_node (default method): process start -> "ready" and -> first `depth` received.

A publisher in this process sends the shared KITTI frame (a synthetic scene when the data folder is absent) at
10 Hz from before the node starts; the node runs as its own process with config/kitti.yaml and the frame's
extrinsics. "ready" is the node's own log stamp of its ready line (after the warm-up); first depth is when the
first `depth` message arrives here; both from the wall clock just before the process is spawned.
Baselines in the same run: a bare rclpy node process (start -> its first log line: the floor of any Python ROS
node here) and `import torch` in a fresh interpreter; the table says whether the node's default method imports
torch at all. Target (issue 13): <= 1.5 s from process start to "ready".
Usage: .venv/bin/python benchmarks/bench_startup.py [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import bench_frame, print_table, write_json

from depth_completion_ros.ros.process_env import package_share_path, ros_process_env

TARGET_READY_S = 1.5
LOG_STAMP = re.compile(r"\[(\d+\.\d+)\] \[[^\]]*\]: ready")

BARE_NODE = "import rclpy; rclpy.init(); n = rclpy.create_node('bare'); n.get_logger().info('ready'); rclpy.shutdown()"
TORCH_IMPORT = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
NODE_IMPORTS_TORCH = (
    "import sys; import depth_completion_ros.ros.depth_completion_node; "
    "from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter; "
    "DepthCompleter(CompleterConfig(method='default')); print('torch' in sys.modules)"
)


def _ready_after(
    cmd: list[str], env: dict[str, str], log: Path, timeout: float = 120.0
) -> tuple[float, subprocess.Popen]:
    """Spawn `cmd`; seconds from just before the spawn to the log stamp of its "ready" line, and the process."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = LOG_STAMP.search(log.read_text(errors="replace"))
        if match:
            return float(match.group(1)) - t0, proc
        if proc.poll() is not None and not LOG_STAMP.search(log.read_text(errors="replace")):
            raise RuntimeError(f"{cmd[:3]} exited before ready:\n{log.read_text()[-2000:]}")
        time.sleep(0.01)
    raise RuntimeError(f"no ready line within {timeout} s:\n{log.read_text()[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    env = ros_process_env()
    os.environ.update(env)
    home = Path(env["ROS_HOME"])
    home.mkdir(parents=True, exist_ok=True)

    torch_import_s = float(
        subprocess.run([sys.executable, "-c", TORCH_IMPORT], env=env, capture_output=True, text=True, check=True).stdout
    )
    node_imports_torch = (
        subprocess.run(
            [sys.executable, "-c", NODE_IMPORTS_TORCH], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        == "True"
    )

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_msgs.msg import Header

    from depth_completion_ros.ros.conversions import array_to_image, camera_model_to_camera_info, xyz_to_pointcloud2

    calib, rgb, scan, source = bench_frame()
    matrix = ",".join(repr(float(v)) for v in calib.T_camera_from_velo.ravel())
    node_cmd = [sys.executable, "-m", "depth_completion_ros.ros.depth_completion_node", "--ros-args"]
    node_cmd += ["--params-file", str(package_share_path("config/kitti.yaml")), "-p", f"extrinsic_matrix:=[{matrix}]"]

    rows, results = [], {"source": source, "runs": []}
    with rclpy.init():
        node = rclpy.create_node("bench_startup_driver")
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        pubs = [
            node.create_publisher(Image, "/rgb/image", qos),
            node.create_publisher(CameraInfo, "/rgb/camera_info", qos),
            node.create_publisher(PointCloud2, "/lidar/points", qos),
        ]
        first_depth: list[float] = []
        node.create_subscription(Image, "/depth", lambda _m: first_depth.append(time.time()), qos)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        stop = threading.Event()

        def send_loop() -> None:  # 10 Hz, fresh stamps, from before the node starts
            while not stop.is_set():
                header = Header(frame_id="kitti_camera_optical")
                header.stamp = node.get_clock().now().to_msg()
                velo = Header(frame_id="velo_link", stamp=header.stamp)
                pubs[1].publish(camera_model_to_camera_info(calib.camera, header))
                pubs[2].publish(xyz_to_pointcloud2(scan[:, :3], velo, fields="xyzi", intensity=scan[:, 3]))
                pubs[0].publish(array_to_image(rgb, "rgb8", header))
                stop.wait(0.1)

        threading.Thread(target=send_loop, daemon=True).start()
        for run in range(args.runs):
            bare_s, bare = _ready_after([sys.executable, "-c", BARE_NODE], env, home / f"bare_{run}.log")
            bare.wait(30)
            first_depth.clear()
            t0 = time.time()
            ready_s, proc = _ready_after(node_cmd, env, home / f"node_{run}.log")
            deadline = time.monotonic() + 60
            while not first_depth and time.monotonic() < deadline:
                time.sleep(0.01)
            depth_s = first_depth[0] - t0 if first_depth else float("nan")
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            rows.append([run, bare_s, ready_s, depth_s, "yes" if ready_s <= TARGET_READY_S else "no"])
            results["runs"].append({"bare_node_s": bare_s, "ready_s": ready_s, "first_depth_s": depth_s})
            time.sleep(1.0)
        stop.set()
        executor.shutdown()
        node.destroy_node()

    med = [statistics.median(r[i] for r in rows) for i in (1, 2, 3)]
    rows.append(["median", *med, "yes" if med[1] <= TARGET_READY_S else "no"])
    load = os.getloadavg()
    print(f"source: {source}; CPUs: {os.cpu_count()}; load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        f"baseline: `import torch` in a fresh interpreter {torch_import_s:.2f} s; the node's default method "
        f"imports torch: {'yes' if node_imports_torch else 'no'}"
    )
    print_table(
        f"start-up, default method (target ready <= {TARGET_READY_S} s)",
        ["run", "bare rclpy node ready (s)", "node ready (s)", "first depth (s)", "ready <= target"],
        rows,
    )
    results.update(torch_import_s=torch_import_s, node_imports_torch=node_imports_torch, load_average=load)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
