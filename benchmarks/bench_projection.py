"""Benchmark: decode a 120k-point PointCloud2 and project it into 1242x375, against per-point Python loops.

Uses the shared KITTI scan (../shared/data/kitti_dc_frame) when present, else 120k random points in front of a
KITTI-like camera. Also measures the occlusion filter and LiDAR de-skew against the KITTI ground truth, and the
de-skew's cost (target <= 1 ms for 120k points on one core) against a straightforward numpy version.
Usage: .venv/bin/python benchmarks/bench_projection.py [--repeats 50] [--json out/bench_projection.json]
Runs on one core (torch/OpenCV threads 1; pin with `taskset -c 0` for a stricter figure).
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import print_table, time_call, write_json
from std_msgs.msg import Header

from depth_completion_ros.core.calibration import read_kitti_oxts_motion, read_kitti_raw_calibration
from depth_completion_ros.core.camera import CameraModel
from depth_completion_ros.core.projection import deskew_points, filter_occluded, project_points
from depth_completion_ros.core.units import kitti_png_to_metres
from depth_completion_ros.ros.conversions import pointcloud2_to_xyz, xyz_to_pointcloud2

KITTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_dc_frame"


def load_inputs() -> tuple[np.ndarray, np.ndarray, CameraModel, str]:
    if (KITTI / "raw" / "lidar_data.bin").is_file():
        raw = KITTI / "raw"
        calib = read_kitti_raw_calibration(raw / "calib_cam_to_cam.txt", raw / "calib_velo_to_cam.txt")
        pts = np.fromfile(raw / "lidar_data.bin", np.float32).reshape(-1, 4)
        return pts, calib.T_camera_from_velo, calib.camera, "KITTI scan"
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-80, 80, (120_000, 3)), rng.random(120_000)]).astype(np.float32)
    P = np.array([[721.5, 0, 609.6, 0], [0, 721.5, 172.9, 0], [0, 0, 1, 0]])
    T = np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    return pts, T, CameraModel.from_projection(P, 1242, 375), "random points"


def loop_decode(msg) -> list[tuple[float, float, float]]:
    """Per-point struct decode of x, y, z."""
    data, step = bytes(msg.data), msg.point_step
    off = {f.name: f.offset for f in msg.fields}
    out = []
    for i in range(msg.width * msg.height):
        base = i * step
        x = struct.unpack_from("<f", data, base + off["x"])[0]
        y = struct.unpack_from("<f", data, base + off["y"])[0]
        z = struct.unpack_from("<f", data, base + off["z"])[0]
        if x == x and y == y and z == z:
            out.append((x, y, z))
    return out


def loop_project(points, T: np.ndarray, cam: CameraModel) -> np.ndarray:
    """Per-point transform, projection with P and z-buffer in Python."""
    w, h = cam.image_size
    M = cam.projection_matrix.tolist()
    R, t = T[:3, :3].tolist(), T[:3, 3].tolist()
    depth = np.zeros((h, w), np.float32)
    for x, y, z in points:
        c = [R[i][0] * x + R[i][1] * y + R[i][2] * z + t[i] for i in range(3)]
        p = [M[i][0] * c[0] + M[i][1] * c[1] + M[i][2] * c[2] + M[i][3] for i in range(3)]
        if p[2] <= 0.1:
            continue
        u, v = math.floor(p[0] / p[2] + 0.5), math.floor(p[1] / p[2] + 0.5)
        if 0 <= u < w and 0 <= v < h and (depth[v, u] == 0 or p[2] < depth[v, u]):
            depth[v, u] = p[2]
    return depth


def numpy_deskew(points: np.ndarray, v: np.ndarray, w: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """The straightforward float64 numpy de-skew (p + (v + w x p) t, azimuth times): the baseline."""
    pts = np.asarray(points, dtype=np.float64)
    xyz = pts[:, :3]
    t = -np.arctan2(xyz[:, 1], xyz[:, 0]) / (2.0 * np.pi) * 0.1 if times is None else times
    out = pts.copy()
    out[:, :3] = xyz + (v + np.cross(w, xyz)) * t[:, None]
    return out


def deskew_rows(pts: np.ndarray, v: np.ndarray, w: np.ndarray, repeats: int) -> list[list[object]]:
    """Timing rows of deskew_points on (N, 4) float32 points: azimuth model and per-point times."""
    times = (-np.arctan2(pts[:, 1], pts[:, 0]) / (2.0 * np.pi) * 0.1).astype(np.float32)
    ours_az = deskew_points(pts, v, w)
    base_az = numpy_deskew(pts, v, w, None)
    ours_t = deskew_points(pts, v, w, times=times, reference_time=0.01)
    base_t = numpy_deskew(pts, v, w, times.astype(np.float64) - 0.01)
    diff = max(float(np.abs(ours_az - base_az).max()), float(np.abs(ours_t - base_t).max()))
    rows = []
    for name, fn, base in (
        ("deskew, azimuth model", lambda: deskew_points(pts, v, w), lambda: numpy_deskew(pts, v, w, None)),
        (
            "deskew, per-point times",
            lambda: deskew_points(pts, v, w, times=times, reference_time=0.01),
            lambda: numpy_deskew(pts, v, w, times),
        ),
    ):
        ours, ref = time_call(fn, repeats), time_call(base, max(5, repeats // 2))
        rows.append([name, ours["median_ms"], ours["iqr_ms"], ref["median_ms"], ref["median_ms"] / ours["median_ms"]])
    print_table(
        f"De-skew of {len(pts)} points (float32 in and out, one core; target <= 1 ms); max |diff| vs the numpy "
        f"baseline {diff * 1e3:.4f} mm",
        ["stage", "median ms", "IQR ms", "numpy float64 ms", "ratio"],
        rows,
    )
    return rows


class _QuietLogger:
    def info(self, text: str) -> None: ...

    def warning(self, text: str) -> None: ...


def timed_decode_row(pts: np.ndarray, repeats: int) -> list[object]:
    """The deskew stage's decode of a cloud with an Ouster-style `t` field (uint32 ns) vs the plain x, y, z decode."""
    from sensor_msgs.msg import PointField

    from depth_completion_ros.ros.deskew import Deskewer
    from depth_completion_ros.ros.params import DeskewConfig

    n = len(pts)
    data = np.zeros(n, np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("t", "<u4")]))
    for j, c in enumerate(("x", "y", "z", "intensity")):
        data[c] = pts[:, j]
    data["t"] = np.linspace(0, 99_000_000, n).astype(np.uint32)
    msg = xyz_to_pointcloud2(pts[:, :3], Header(frame_id="velo"), fields="xyzi", intensity=pts[:, 3])
    msg.header.stamp.sec = 1_700_000_000
    msg.fields = [*msg.fields, PointField(name="t", offset=16, datatype=PointField.UINT32, count=1)]
    msg.point_step, msg.row_step = 20, 20 * n
    msg.data = data.tobytes()
    stage = Deskewer(DeskewConfig(), None, _QuietLogger())
    ours = time_call(lambda: stage.decode(msg), repeats)
    plain = time_call(lambda: pointcloud2_to_xyz(msg), repeats)
    return ["decode x, y, z + 't' (uint32 ns)", ours["median_ms"], ours["iqr_ms"], plain["median_ms"]]


def sparse_error(depth: np.ndarray, gt: np.ndarray) -> tuple[float, float, int]:
    both = (depth > 0) & (gt > 0)
    e = depth[both] - gt[both]
    return float(np.sqrt(np.mean(e**2)) * 1e3), float(np.mean(np.abs(e)) * 1e3), int(both.sum())


def depth_desc(d: np.ndarray) -> str:
    return f"{d.shape[1]}x{d.shape[0]} ({np.count_nonzero(d)} points)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    pts, T, cam, source = load_inputs()
    msg = xyz_to_pointcloud2(pts[:, :3], Header(frame_id="velo"), fields="xyzi", intensity=pts[:, 3])
    xyz = pointcloud2_to_xyz(msg)
    decode = time_call(lambda: pointcloud2_to_xyz(msg), args.repeats)
    project = time_call(lambda: project_points(xyz, T, cam), args.repeats)
    both = time_call(lambda: project_points(pointcloud2_to_xyz(msg), T, cam), args.repeats)
    loop_pts = loop_decode(msg)
    loop_dec = time_call(lambda: loop_decode(msg), 1, warmup=0)
    loop_proj = time_call(lambda: loop_project(loop_pts, T, cam), 1, warmup=0)
    ref, ours = loop_project(loop_pts, T, cam), project_points(xyz, T, cam)
    differ = int(np.count_nonzero(~np.isclose(ref, ours, rtol=1e-4, atol=0.0)))
    rows = [
        ["decode PointCloud2 -> (N,3)", decode["median_ms"], decode["iqr_ms"], loop_dec["median_ms"]],
        ["project into 1242x375", project["median_ms"], project["iqr_ms"], loop_proj["median_ms"]],
        ["decode + project", both["median_ms"], both["iqr_ms"], loop_dec["median_ms"] + loop_proj["median_ms"]],
    ]
    for r in rows:
        r.append(r[3] / r[1])
    print_table(
        f"{source}: {len(pts)} points (target decode + project <= 2 ms on one core); "
        f"pixels differing from the float64 loop: {differ} of {int(np.count_nonzero(ref))} (float32 rounding at "
        "pixel borders)",
        ["stage", "median ms", "IQR ms", "per-point loop ms", "ratio"],
        rows,
    )
    results: dict[str, object] = {"source": source, "points": len(pts), "rows": rows, "loop_pixels_differing": differ}
    v_demo, w_demo = np.array([12.9, -0.18, 0.08]), np.array([-0.0024, 0.0178, -0.029])  # the KITTI frame's OXTS
    results["deskew_rows"] = deskew_rows(np.ascontiguousarray(pts, dtype=np.float32), v_demo, w_demo, args.repeats)
    row = timed_decode_row(np.ascontiguousarray(pts, dtype=np.float32), args.repeats)
    print_table(
        "Decode with per-point times (the deskew stage: x, y, z and times read, unit detected, NaN rows dropped)",
        ["stage", "median ms", "IQR ms", "x, y, z only ms"],
        [row],
    )
    results["decode_with_times"] = row
    if source == "KITTI scan":
        raw = KITTI / "raw"
        gt = kitti_png_to_metres(cv2.imread(str(KITTI / "depth_completion/groundtruth_image_02.png"), -1))
        v, w = read_kitti_oxts_motion(raw / "imu_data.txt", raw / "calib_imu_to_velo.txt")
        plain = project_points(pts, T, cam)
        deskewed = project_points(deskew_points(pts, v, w), T, cam)
        variants = {
            "raw scan": (plain, None),
            "de-skewed": (deskewed, None),
            "raw + occlusion filter": (filter_occluded(plain), plain),
            "de-skewed + occlusion filter": (filter_occluded(deskewed), deskewed),
        }
        err_rows = []
        for name, (d, before) in variants.items():
            removed = np.zeros_like(d) if before is None else np.where(d > 0, 0.0, before)
            both = (removed > 0) & (gt > 0)
            removed_err = float(np.median(np.abs(removed[both] - gt[both]))) if both.any() else float("nan")
            err_rows.append(
                [name, *sparse_error(d, gt), int(np.count_nonzero(d)), int(np.count_nonzero(removed)), removed_err]
            )
        print_table(
            "Sparse points vs KITTI ground truth (groundtruth_image_02), where both exist",
            ["input", "RMSE mm", "MAE mm", "pixels with GT", "points", "removed", "removed: median |err| m"],
            err_rows,
        )
        filt = time_call(lambda: filter_occluded(deskewed), max(5, args.repeats // 5))
        print(f"filter_occluded on {depth_desc(deskewed)}: median {filt['median_ms']:.2f} ms")
        results["filter_occluded_ms"] = filt["median_ms"]
        results["sparse_vs_gt"] = err_rows
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, {os.cpu_count()} CPUs")
    results["loadavg"] = load
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
