"""`depth-completion project`: a LiDAR scan into a camera -> sparse depth PNG + colourized preview.

Default input: the KITTI frame `kitti_dc_frame` of the data folder (`default_data_dir`: $DEPTH_COMPLETION_DATA,
else `shared/data` in the current directory or one above it, e.g. ../shared/data from a checkout) when present,
else a generated synthetic scene.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from depth_completion_ros.cli import one_line
from depth_completion_ros.core.calibration import read_kitti_oxts_motion, read_kitti_raw_calibration
from depth_completion_ros.core.errors import DepthCompletionError
from depth_completion_ros.core.files import read_kitti_scan, write_image
from depth_completion_ros.core.projection import deskew_points, filter_occluded, project_points
from depth_completion_ros.core.units import metres_to_kitti_png
from depth_completion_ros.core.visualize import colorize_depth

__all__ = ["DATA_ENV", "add_arguments", "default_data_dir", "default_kitti_dir", "run"]

DATA_ENV = "DEPTH_COMPLETION_DATA"
"""Environment variable naming the data folder (the one holding `kitti_dc_frame/`, ...)."""


def default_data_dir() -> Path:
    """The data folder: `$DEPTH_COMPLETION_DATA`, else the first `shared/data` in the current directory or one of
    its parents (so ../shared/data from a checkout), else `./shared/data` (may not exist).

    Never relative to the installed Python files, which a colcon workspace puts under `install/`.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    cwd = Path.cwd()
    for base in (cwd, *cwd.parents):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return cwd / "shared" / "data"


def default_kitti_dir() -> Path:
    """`kitti_dc_frame` in `default_data_dir()` (may not exist)."""
    return default_data_dir() / "kitti_dc_frame"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--kitti-dir", type=Path, help="KITTI DC frame dir (raw/lidar_data.bin + raw/calib_*.txt)")
    src.add_argument("--synthetic", action="store_true", help="use a generated scene")
    parser.add_argument("--camera", type=int, default=2, help="KITTI colour camera index (2 or 3)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic scene seed")
    parser.add_argument("--no-deskew", action="store_true", help="skip LiDAR motion compensation (KITTI)")
    parser.add_argument("--filter-occluded", action="store_true", help="drop points seen through foreground")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output directory")


def run(args: argparse.Namespace) -> int:
    """Project and write `sparse_depth.png` (KITTI uint16, metres x 256) and `sparse_preview.png`."""
    try:
        kitti_dir = args.kitti_dir
        if kitti_dir is None and not args.synthetic and default_kitti_dir().is_dir():
            kitti_dir = default_kitti_dir()
        t0 = time.perf_counter()
        if kitti_dir is not None:
            raw = Path(kitti_dir) / "raw"
            calib = read_kitti_raw_calibration(raw / "calib_cam_to_cam.txt", raw / "calib_velo_to_cam.txt", args.camera)
            points = read_kitti_scan(raw / "lidar_data.bin")
            if not args.no_deskew and (raw / "imu_data.txt").is_file():
                imu_calib = raw / "calib_imu_to_velo.txt"
                v, w = read_kitti_oxts_motion(raw / "imu_data.txt", imu_calib if imu_calib.is_file() else None)
                points = deskew_points(points, v, w)
            camera, T, source = calib.camera, calib.T_camera_from_velo, f"KITTI {kitti_dir}"
        else:
            from depth_completion_ros.data.synthetic import generate_scene

            scene = generate_scene(seed=args.seed)
            points, camera, T = scene.points_lidar, scene.camera, scene.T_camera_from_lidar
            source = f"synthetic scene (seed {args.seed})"
        depth = project_points(points, T, camera)
        if args.filter_occluded:
            depth = filter_occluded(depth)
        elapsed = (time.perf_counter() - t0) * 1e3
    except (DepthCompletionError, OSError) as exc:
        print(f"depth-completion project: error: {one_line(exc)}", file=sys.stderr)
        return 2
    write_image(args.out / "sparse_depth.png", metres_to_kitti_png(depth))
    write_image(args.out / "sparse_preview.png", np.ascontiguousarray(colorize_depth(depth)[..., ::-1]))
    n = int(np.count_nonzero(depth))
    print(
        f"{source}: {len(points)} points -> {n} pixels ({100.0 * n / depth.size:.1f} %) in "
        f"{depth.shape[1]}x{depth.shape[0]}, {elapsed:.1f} ms; wrote {args.out}/sparse_depth.png, sparse_preview.png"
    )
    return 0
