"""`depth-completion kitti-to-bag`: a KITTI raw drive (or the single-frame layout) -> rosbag2 (mcap or sqlite3).

Topics: `/kitti/camera/image_raw` (rgb8), `/kitti/camera/camera_info` (rectified: P with the baseline folded into
the extrinsic), `/kitti/velo/points` (x, y, z, intensity float32) and `/tf_static` (`velo_link` ->
`kitti_camera_optical`, transient-local). Image and cloud of a frame share one stamp. Clouds are
motion-compensated to the camera trigger (`deskew_points`) when an OXTS record is available, as KITTI's own
depth-completion inputs are; `--no-deskew` keeps the raw scan. Messages are standard types serialized by rclpy,
so the bag plays with `ros2 bag play`.

Layouts accepted as SRC:
- a raw drive `<date>/<date>_drive_XXXX_sync/` with `image_0N/data/*.png`, `velodyne_points/data/*.bin`,
  `oxts/data/*.txt`, `*/timestamps.txt`, and the calibration files in the drive or its parent directory;
- the single frame of ../shared/data/kitti_dc_frame (`raw/lidar_data.bin`, `raw/calib_*.txt`,
  `raw/imu_data.txt`, `raw/sync_rect/cam_0N.png` or `depth_completion/test_image.png`).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from depth_completion_ros.cli import one_line
from depth_completion_ros.core.calibration import KittiCalibration, read_kitti_oxts_motion, read_kitti_raw_calibration
from depth_completion_ros.core.errors import DataError, DepthCompletionError
from depth_completion_ros.core.files import atomic_directory, read_image, read_kitti_scan
from depth_completion_ros.core.projection import deskew_points
from depth_completion_ros.tools.argtypes import positive_float, positive_int

__all__ = [
    "CAMERA_FRAME",
    "TOPICS",
    "VELO_FRAME",
    "KittiFrame",
    "add_arguments",
    "iter_kitti_frames",
    "run",
    "write_bag",
]

TOPICS = {
    "image": "/kitti/camera/image_raw",
    "camera_info": "/kitti/camera/camera_info",
    "points": "/kitti/velo/points",
    "tf_static": "/tf_static",
}
CAMERA_FRAME = "kitti_camera_optical"
VELO_FRAME = "velo_link"


@dataclass(frozen=True)
class KittiFrame:
    """One synchronized frame: RGB (H, W, 3) uint8, scan (N, 4) float32 velodyne frame, stamp in ns."""

    rgb: np.ndarray
    scan: np.ndarray
    stamp_ns: int


def _find(path: Path, name: str) -> Path | None:
    for d in (path, path.parent):
        if (d / name).is_file():
            return d / name
    return None


def _read_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(read_image(path, cv2.IMREAD_COLOR)[..., ::-1])


def _timestamps(path: Path) -> list[int] | None:
    """KITTI timestamps.txt ('2011-09-26 13:02:25.964389445', UTC) -> ns since the epoch.

    Raises DataError naming the file and line of a malformed stamp, or when the stamps go back in time.
    """
    if not path.is_file():
        return None
    out = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    for n, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line:
            continue
        day, _, frac = line.partition(".")
        try:
            base = datetime.strptime(day, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
            if frac and not (frac.isdigit() and len(frac) <= 9):
                raise ValueError(f"fraction {frac!r}")
        except ValueError as exc:
            raise DataError(f"{path}:{n}: not a KITTI timestamp ('YYYY-MM-DD hh:mm:ss.fffffffff'): {line!r}") from exc
        stamp = int(base) * 1_000_000_000 + int((frac + "000000000")[:9])
        if stamp < 0:
            raise DataError(f"{path}:{n}: {line!r} is before 1970; ROS time cannot hold it")
        if out and stamp < out[-1]:
            raise DataError(f"{path}:{n}: {line!r} is earlier than the line before")
        out.append(stamp)
    return out


def iter_kitti_frames(
    src: Path, *, camera_index: int = 2, deskew: bool = True, repeat: int = 1, rate_hz: float = 10.0
) -> tuple[KittiCalibration, Iterator[KittiFrame], int]:
    """Calibration, a frame iterator and the frame count for SRC (drive or single-frame layout).

    Raises DataError for a bad layout or option: `repeat` < 1, `rate_hz` not finite and > 0, or stamps that would
    repeat or leave the range of ROS time (int32 seconds).
    """
    if not (isinstance(repeat, int) and repeat >= 1):
        raise DataError(f"repeat must be an integer >= 1, got {repeat!r}")
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise DataError(f"rate_hz must be a finite number > 0, got {rate_hz!r}")
    src = Path(src)
    imu_calib = None
    if (src / "raw" / "lidar_data.bin").is_file():  # single-frame layout
        raw = src / "raw"
        calib = read_kitti_raw_calibration(raw / "calib_cam_to_cam.txt", raw / "calib_velo_to_cam.txt", camera_index)
        image = raw / "sync_rect" / f"cam_0{camera_index}.png"
        if not image.is_file() and camera_index == 2:
            image = src / "depth_completion" / "test_image.png"
        images, scans = [image], [raw / "lidar_data.bin"]
        oxts = [raw / "imu_data.txt"] if (raw / "imu_data.txt").is_file() else []
        imu_calib = _find(raw, "calib_imu_to_velo.txt")
        stamps = None
    elif (src / "velodyne_points" / "data").is_dir():
        cam_to_cam, velo_to_cam = _find(src, "calib_cam_to_cam.txt"), _find(src, "calib_velo_to_cam.txt")
        if cam_to_cam is None or velo_to_cam is None:
            raise DataError(f"calib_cam_to_cam.txt / calib_velo_to_cam.txt not found in {src} or its parent")
        calib = read_kitti_raw_calibration(cam_to_cam, velo_to_cam, camera_index)
        scans = sorted((src / "velodyne_points" / "data").glob("*.bin"))
        images = [src / f"image_0{camera_index}" / "data" / f"{s.stem}.png" for s in scans]
        oxts_dir = src / "oxts" / "data"
        oxts = [oxts_dir / f"{s.stem}.txt" for s in scans] if oxts_dir.is_dir() else []
        imu_calib = _find(src, "calib_imu_to_velo.txt")
        stamps = _timestamps(src / f"image_0{camera_index}" / "timestamps.txt")
    else:
        raise DataError(f"{src} is neither a KITTI raw drive nor the single-frame layout")
    missing = [p for p in images + scans if not p.is_file()]
    if missing:
        raise DataError(f"missing KITTI files, e.g. {missing[0]} ({len(missing)} in all)")
    period_ns = round(1e9 / rate_hz)
    t0 = stamps[0] if stamps else 1_317_000_000_000_000_000  # KITTI era, 2011
    count = len(scans) * repeat
    if period_ns < 1:
        raise DataError(f"rate_hz {rate_hz} is above 1 GHz: synthesized stamps would repeat")
    last = max(stamps[-1] if stamps else 0, t0 + (count - 1) * period_ns)
    if last >= 2**31 * 1_000_000_000:
        raise DataError(
            f"the last stamp ({last} ns) is beyond ROS time (int32 seconds); lower --repeat or raise --rate-hz"
        )

    def frames() -> Iterator[KittiFrame]:
        for k in range(count):
            i = k % len(scans)
            scan = read_kitti_scan(scans[i])
            if deskew and i < len(oxts) and oxts[i].is_file():
                v, w = read_kitti_oxts_motion(oxts[i], imu_calib)
                scan = deskew_points(scan, v, w).astype(np.float32)
            recorded = stamps is not None and repeat == 1 and len(stamps) == len(scans)
            stamp = stamps[i] if recorded else t0 + k * period_ns
            yield KittiFrame(_read_rgb(images[i]), scan, stamp)

    return calib, frames(), count


def write_bag(
    out: Path, calib: KittiCalibration, frames: Iterator[KittiFrame], *, storage: str = "mcap"
) -> tuple[int, int]:
    """Write frames to a rosbag2 at `out`; returns (messages written, frames)."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TransformStamped
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from depth_completion_ros.ros.conversions import array_to_image, camera_model_to_camera_info, xyz_to_pointcloud2
    from depth_completion_ros.ros.extrinsics import quat_xyzw_from_matrix

    typestore = get_typestore(Stores.ROS2_KILTED)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    n_msgs = n_frames = 0
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        conn_img = writer.add_connection(TOPICS["image"], "sensor_msgs/msg/Image", typestore=typestore)
        conn_info = writer.add_connection(TOPICS["camera_info"], "sensor_msgs/msg/CameraInfo", typestore=typestore)
        conn_pts = writer.add_connection(TOPICS["points"], "sensor_msgs/msg/PointCloud2", typestore=typestore)
        conn_tf = writer.add_connection(
            TOPICS["tf_static"], "tf2_msgs/msg/TFMessage", typestore=typestore, offered_qos_profiles=_static_qos()
        )
        for frame in frames:
            stamp = Time(sec=frame.stamp_ns // 1_000_000_000, nanosec=frame.stamp_ns % 1_000_000_000)
            if n_frames == 0:
                T = calib.T_camera_from_velo
                tf = TransformStamped()
                tf.header = Header(stamp=stamp, frame_id=CAMERA_FRAME)
                tf.child_frame_id = VELO_FRAME
                tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = map(
                    float, T[:3, 3]
                )
                q = quat_xyzw_from_matrix(T[:3, :3])
                r = tf.transform.rotation
                r.x, r.y, r.z, r.w = map(float, q)
                writer.write(conn_tf, frame.stamp_ns, serialize_message(TFMessage(transforms=[tf])))
                n_msgs += 1
            cam_header = Header(stamp=stamp, frame_id=CAMERA_FRAME)
            writer.write(conn_img, frame.stamp_ns, serialize_message(array_to_image(frame.rgb, "rgb8", cam_header)))
            info = camera_model_to_camera_info(calib.camera, cam_header)
            writer.write(conn_info, frame.stamp_ns, serialize_message(info))
            cloud = xyz_to_pointcloud2(
                frame.scan[:, :3], Header(stamp=stamp, frame_id=VELO_FRAME), fields="xyzi", intensity=frame.scan[:, 3]
            )
            writer.write(conn_pts, frame.stamp_ns, serialize_message(cloud))
            n_msgs += 3
            n_frames += 1
    return n_msgs, n_frames


def _static_qos() -> list:
    """Transient-local, reliable, keep-last 1: what tf2's static broadcaster offers (as rosbags Qos)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(sec=0x7FFFFFFF, nsec=0xFFFFFFFF)
    zero = QosTime(sec=0, nsec=0)
    return [
        Qos(
            QosHistory.KEEP_LAST,
            1,
            QosReliability.RELIABLE,
            QosDurability.TRANSIENT_LOCAL,
            never,
            never,
            QosLiveliness.AUTOMATIC,
            zero,
            False,
        )
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("src", type=Path, help="KITTI raw drive dir, or the single-frame dir (kitti_dc_frame)")
    parser.add_argument("--out", type=Path, required=True, help="bag directory to create")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--camera", type=int, default=2, choices=(2, 3), help="colour camera")
    parser.add_argument("--rate-hz", type=positive_float, default=10.0, help="frame rate when stamps are synthesized")
    parser.add_argument(
        "--repeat", type=positive_int, default=1, help="write the frames N times (a single frame lasts)"
    )
    parser.add_argument("--no-deskew", action="store_true", help="keep the raw (not motion-compensated) scans")


def run(args: argparse.Namespace) -> int:
    """Convert; exit code 2 on bad input."""
    try:
        if args.out.exists():
            raise DataError(f"{args.out} exists; choose a new bag directory")
        calib, frames, _ = iter_kitti_frames(
            args.src, camera_index=args.camera, deskew=not args.no_deskew, repeat=args.repeat, rate_hz=args.rate_hz
        )
        with atomic_directory(args.out) as tmp_bag:  # a failed run leaves no partial bag behind
            n_msgs, n_frames = write_bag(tmp_bag, calib, frames, storage=args.storage)
    except (DepthCompletionError, OSError) as exc:
        print(f"depth-completion kitti-to-bag: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.storage}): {n_frames} frames, {n_msgs} messages on {', '.join(TOPICS.values())}")
    return 0
