"""Benchmark: message -> array decoding (depth_completion_ros.ros.conversions) against per-point Python loops.

Cases (sizes of the KITTI frame): a 120k-point XYZI PointCloud2 (point_step 16, not dense with 1% NaN points,
and a dense one), a 1242x375 rgb8 and bgr8 Image (asked for as "rgb8"), a 1242x375 32FC1 depth Image (to metres,
NaN -> 0), and the reverse direction for the cloud and the depth image.  Each row is timed against a
straightforward per-point loop (`struct.unpack_from` / `struct.pack_into` per point or pixel) measured in the same
run, and, when importable, upstream sensor_msgs_py.

Usage:
    .venv/bin/python benchmarks/bench_decode.py [--repeats 50] [--baseline-repeats 3] [--json out.json]

Prints a table: median and IQR in ms, the baseline's median, and baseline / ours.  OpenCV runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line
from std_msgs.msg import Header

from depth_completion_ros.core.allocator import configure_allocator
from depth_completion_ros.ros import compat
from depth_completion_ros.ros import conversions as conv

N_POINTS = 120_000
W, H = 1242, 375


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 2) -> np.ndarray:
    """Wall-clock seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


# --- per-point baselines ---------------------------------------------------------------------------------------


def loop_cloud_xyz(msg) -> np.ndarray:
    """Per-point struct decode of x, y, z (little-endian float32 at the fields' offsets), NaN points dropped."""
    data = bytes(msg.data)
    offs = {f.name: f.offset for f in msg.fields}
    ox, oy, oz = offs["x"], offs["y"], offs["z"]
    step = msg.point_step
    rows = []
    for i in range(msg.width * msg.height):
        base = i * step
        x = struct.unpack_from("<f", data, base + ox)[0]
        y = struct.unpack_from("<f", data, base + oy)[0]
        z = struct.unpack_from("<f", data, base + oz)[0]
        if x == x and y == y and z == z:  # not NaN
            rows.append((x, y, z))
    return np.array(rows, dtype=np.float32)


def loop_image_rgb(msg, swap: bool) -> np.ndarray:
    """Per-pixel struct decode of a 3-channel uint8 image; swap = BGR -> RGB."""
    data = bytes(msg.data)
    out = np.empty((msg.height, msg.width, 3), np.uint8)
    for r in range(msg.height):
        base = r * msg.step
        for c in range(msg.width):
            a, b, d = struct.unpack_from("3B", data, base + 3 * c)
            out[r, c] = (d, b, a) if swap else (a, b, d)
    return out


def loop_depth_32f(msg) -> np.ndarray:
    """Per-pixel struct decode of 32FC1 metres; NaN / inf / <= 0 -> 0."""
    data = bytes(msg.data)
    out = np.zeros((msg.height, msg.width), np.float32)
    for r in range(msg.height):
        base = r * msg.step
        for c in range(msg.width):
            v = struct.unpack_from("<f", data, base + 4 * c)[0]
            if v > 0 and v != float("inf"):
                out[r, c] = v
    return out


def loop_encode_xyzi(points: np.ndarray, intensity: np.ndarray) -> bytes:
    """Per-point struct encode of x, y, z, intensity float32."""
    buf = bytearray(16 * len(points))
    for i, ((x, y, z), v) in enumerate(zip(points.tolist(), intensity.tolist(), strict=True)):
        struct.pack_into("<4f", buf, 16 * i, x, y, z, v)
    return bytes(buf)


def loop_encode_depth(depth: np.ndarray) -> bytes:
    """Per-pixel struct encode of REP 118 32FC1 (0 -> NaN)."""
    buf = bytearray(4 * depth.size)
    nan = float("nan")
    for i, v in enumerate(depth.reshape(-1).tolist()):
        struct.pack_into("<f", buf, 4 * i, v if v > 0 else nan)
    return bytes(buf)


# --- cases -----------------------------------------------------------------------------------------------------


def make_inputs(rng: np.random.Generator) -> dict:
    pts = rng.uniform(-80, 80, size=(N_POINTS, 3)).astype(np.float32)
    pts[rng.choice(N_POINTS, N_POINTS // 100, replace=False), 0] = np.nan
    inten = rng.random(N_POINTS).astype(np.float32)
    cloud = conv.xyz_to_pointcloud2(pts, Header(frame_id="velo"), fields="xyzi", intensity=inten)
    dense = conv.xyz_to_pointcloud2(np.nan_to_num(pts), Header(frame_id="velo"), fields="xyzi", intensity=inten)
    rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 80, size=(H, W)).astype(np.float32)
    depth[rng.random((H, W)) < 0.3] = 0.0
    return {
        "points": pts,
        "intensity": inten,
        "cloud": cloud,
        "dense": dense,
        "rgb8": conv.array_to_image(rgb, "rgb8"),
        "bgr8": conv.array_to_image(rgb[..., ::-1], "bgr8"),
        "depth": depth,
        "depth_msg": conv.depth_metres_to_image(depth, Header()),
    }


def main(argv: list[str] | None = None) -> int:
    configure_allocator()  # as the node and CLI do (see benchmarks/README.md)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    inp = make_inputs(rng)
    cloud, pts, inten = inp["cloud"], inp["points"], inp["intensity"]

    # Sanity: ours == baseline before timing anything.
    ours_xyz = conv.pointcloud2_to_xyz(cloud)
    if not np.array_equal(ours_xyz, loop_cloud_xyz(cloud)):
        raise SystemExit("pointcloud2_to_xyz disagrees with the per-point loop")
    if not np.array_equal(conv.image_to_array(inp["bgr8"], "rgb8"), loop_image_rgb(inp["bgr8"], swap=True)):
        raise SystemExit("image_to_array(bgr8 -> rgb8) disagrees with the per-pixel loop")
    if not np.array_equal(conv.image_to_depth_metres(inp["depth_msg"]), loop_depth_32f(inp["depth_msg"])):
        raise SystemExit("image_to_depth_metres disagrees with the per-pixel loop")
    if bytes(conv.xyz_to_pointcloud2(pts, Header(), fields="xyzi", intensity=inten).data) != loop_encode_xyzi(
        pts, inten
    ):
        raise SystemExit("xyz_to_pointcloud2 disagrees with the per-point loop")

    cases: list[tuple[str, Callable[[], object], str, Callable[[], object]]] = [
        (
            "cloud 120k XYZI -> (N,3) f32, skip_nans",
            lambda: conv.pointcloud2_to_xyz(cloud),
            "struct loop",
            lambda: loop_cloud_xyz(cloud),
        ),
        (
            "cloud 120k XYZI dense -> (N,3) f32",
            lambda: conv.pointcloud2_to_xyz(inp["dense"]),
            "struct loop",
            lambda: loop_cloud_xyz(inp["dense"]),
        ),
        (
            "cloud 120k XYZI -> structured (view)",
            lambda: conv.pointcloud2_to_structured(cloud),
            "struct loop",
            lambda: loop_cloud_xyz(cloud),
        ),
        (
            "image 1242x375 rgb8 -> rgb8",
            lambda: conv.image_to_array(inp["rgb8"], "rgb8", copy=True),
            "struct loop",
            lambda: loop_image_rgb(inp["rgb8"], swap=False),
        ),
        (
            "image 1242x375 bgr8 -> rgb8",
            lambda: conv.image_to_array(inp["bgr8"], "rgb8"),
            "struct loop",
            lambda: loop_image_rgb(inp["bgr8"], swap=True),
        ),
        (
            "depth 1242x375 32FC1 -> metres",
            lambda: conv.image_to_depth_metres(inp["depth_msg"]),
            "struct loop",
            lambda: loop_depth_32f(inp["depth_msg"]),
        ),
        (
            "encode (N,3)+i -> cloud 120k XYZI",
            lambda: conv.xyz_to_pointcloud2(pts, Header(), fields="xyzi", intensity=inten),
            "struct loop",
            lambda: loop_encode_xyzi(pts, inten),
        ),
        (
            "encode metres -> 32FC1 1242x375",
            lambda: conv.depth_metres_to_image(inp["depth"], Header()),
            "struct loop",
            lambda: loop_encode_depth(inp["depth"]),
        ),
    ]
    if compat.point_cloud2 is not None:
        pc2 = compat.point_cloud2
        cases.insert(
            1,
            (
                "cloud 120k XYZI -> (N,3) f32, skip_nans",
                lambda: conv.pointcloud2_to_xyz(cloud),
                "sensor_msgs_py",
                lambda: pc2.read_points_numpy(cloud, field_names=["x", "y", "z"], skip_nans=True),
            ),
        )

    rows = []
    print(f"{'case':42s} {'ours ms':>9s} {'IQR':>7s} {'baseline':>15s} {'base ms':>10s} {'ratio':>9s}")
    for name, fn, base_name, base_fn in cases:
        ours = timeit(fn, args.repeats) * 1e3
        reps = args.repeats if base_name == "sensor_msgs_py" else args.baseline_repeats
        base = timeit(base_fn, reps, warmup=0 if base_name == "struct loop" else 2) * 1e3
        med, iqr = float(np.median(ours)), float(np.subtract(*np.percentile(ours, [75, 25])))
        bmed = float(np.median(base))
        rows.append({"case": name, "ours_ms": med, "ours_iqr_ms": iqr, "baseline": base_name, "baseline_ms": bmed})
        print(f"{name:42s} {med:9.3f} {iqr:7.3f} {base_name:>15s} {bmed:10.2f} {bmed / med:8.0f}x")
    print(machine_line())

    if args.json is not None:
        meta = {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "machine": platform.machine(),
            "cv2_threads": cv2.getNumThreads(),
            "machine_load": machine_line(),
            "repeats": args.repeats,
            "baseline_repeats": args.baseline_repeats,
        }
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
