"""`depth-completion kitti-to-bag`: a KITTI raw drive (or the single-frame layout) -> rosbag2 (mcap or sqlite3).

Topics: `/kitti/camera/image_raw` (rgb8), `/kitti/camera/camera_info` (rectified: P with the baseline folded into
the extrinsic), `/kitti/velo/points` (x, y, z, intensity float32) and `/tf_static` (`velo_link` ->
`kitti_camera_optical`, transient-local). Image and cloud of a frame share one stamp. Clouds are
motion-compensated to the camera trigger (`deskew_points`) when an OXTS record is available, as KITTI's own
depth-completion inputs are; `--no-deskew` keeps the raw scan. Messages are standard types serialized by rclpy,
so the bag plays with `ros2 bag play`. The frame rate is stored in the bag's metadata (`custom_data`
`RATE_KEY`), so a looped bag keeps its period even when all its frames share a stamp. A single frame is
repeated `SINGLE_FRAME_REPEAT` times by default (a short, static drive).

`--odometry` adds an ego-motion source for the nodes' live de-skew and writes raw scans (so that a node with
`deskew: auto` does not compensate them twice): `/tf`
`odom` -> `base_link` (the OXTS/IMU frame) at `--odometry-rate-hz`, integrated from each frame's OXTS velocities
(a constant twist from the previous frame's scan end to this frame's), `/kitti/oxts/twist` (TwistStamped of
`base_link`, one per frame), and the static tree `base_link` -> `velo_link` (calib_imu_to_velo.txt) ->
`kitti_camera_optical`.  The cloud is then logged when its scan ends (stamp + half a period), as a driver
publishes it, so the odometry covering the scan precedes it.

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
from depth_completion_ros.ros.bag_player import RATE_KEY
from depth_completion_ros.tools.argtypes import positive_float, positive_int

__all__ = [
    "BASE_FRAME",
    "CAMERA_FRAME",
    "ODOMETRY_TOPICS",
    "ODOM_FRAME",
    "TOPICS",
    "VELO_FRAME",
    "KittiFrame",
    "add_arguments",
    "iter_kitti_frames",
    "read_T_velo_from_imu",
    "run",
    "write_bag",
]

TOPICS = {
    "image": "/kitti/camera/image_raw",
    "camera_info": "/kitti/camera/camera_info",
    "points": "/kitti/velo/points",
    "tf_static": "/tf_static",
}
SINGLE_FRAME_REPEAT = 30
"""Default `--repeat` of the single-frame layout: 3 s at 10 Hz."""
ODOMETRY_TOPICS = {"tf": "/tf", "twist": "/kitti/oxts/twist"}
CAMERA_FRAME = "kitti_camera_optical"
VELO_FRAME = "velo_link"
BASE_FRAME = "base_link"
ODOM_FRAME = "odom"


@dataclass(frozen=True)
class KittiFrame:
    """One synchronized frame: RGB (H, W, 3) uint8, scan (N, 4) float32 velodyne frame, stamp in ns, and the
    OXTS twist of the IMU (base_link) in its own frame ((v m/s, w rad/s), None without an OXTS record)."""

    rgb: np.ndarray
    scan: np.ndarray
    stamp_ns: int
    imu_twist: tuple[np.ndarray, np.ndarray] | None = None


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
            twist = None
            if i < len(oxts) and oxts[i].is_file():
                twist = read_kitti_oxts_motion(oxts[i])  # IMU frame
                if deskew:
                    v, w = read_kitti_oxts_motion(oxts[i], imu_calib)
                    scan = deskew_points(scan, v, w).astype(np.float32)
            recorded = stamps is not None and repeat == 1 and len(stamps) == len(scans)
            stamp = stamps[i] if recorded else t0 + k * period_ns
            yield KittiFrame(_read_rgb(images[i]), scan, stamp, twist)

    return calib, frames(), count


def read_T_velo_from_imu(src: Path) -> np.ndarray:
    """(4, 4) `calib_imu_to_velo.txt` of a KITTI drive or the single-frame layout (maps IMU points to velo)."""
    from depth_completion_ros.core.calibration import parse_kitti_calib_file

    src = Path(src)
    path = _find(src / "raw", "calib_imu_to_velo.txt") or _find(src, "calib_imu_to_velo.txt")
    if path is None:
        raise DataError(f"calib_imu_to_velo.txt not found in {src} (needed for --odometry)")
    values = parse_kitti_calib_file(path)
    try:
        R = np.asarray(values["R"], dtype=np.float64).reshape(3, 3)
        t = np.asarray(values["T"], dtype=np.float64).reshape(3)
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: no R (9 values) and T (3 values): {exc}") from None
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _transform_msg(parent: str, child: str, stamp_ns: int, T: np.ndarray):
    """geometry_msgs/TransformStamped parent <- child (T maps child-frame points into `parent`)."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TransformStamped
    from std_msgs.msg import Header

    from depth_completion_ros.ros.extrinsics import quat_xyzw_from_matrix

    tf = TransformStamped()
    tf.header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=parent)
    tf.child_frame_id = child
    tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = map(float, T[:3, 3])
    r = tf.transform.rotation
    r.x, r.y, r.z, r.w = map(float, quat_xyzw_from_matrix(T[:3, :3]))
    return tf


class _Odometry:
    """`odom` <- `base_link` poses integrated from per-frame OXTS twists, written as /tf knots."""

    LEAD_NS = 300_000_000  # odometry starts this long before the first frame

    def __init__(self, writer, connection, rate_hz: float) -> None:
        self.writer, self.connection = writer, connection
        self.step_ns = max(1, round(1e9 / rate_hz))
        self.pose = np.eye(4)
        self.t_ns: int | None = None
        self.count = 0

    def advance(self, until_ns: int, twist: tuple[np.ndarray, np.ndarray]) -> None:
        """Integrate at the constant `twist` (base_link frame) up to `until_ns`, writing a knot per step."""

        from depth_completion_ros.core.projection import pose_from_twist

        if self.t_ns is None:
            self.t_ns = until_ns - self.LEAD_NS
            self._write()
        while self.t_ns < until_ns:
            dt_ns = min(self.step_ns, until_ns - self.t_ns)
            self.pose = self.pose @ pose_from_twist(twist[0], twist[1], dt_ns * 1e-9)
            self.t_ns += dt_ns
            self._write()

    def _write(self) -> None:
        from rclpy.serialization import serialize_message
        from tf2_msgs.msg import TFMessage

        msg = TFMessage(transforms=[_transform_msg(ODOM_FRAME, BASE_FRAME, self.t_ns, self.pose)])
        self.writer.write(self.connection, self.t_ns, serialize_message(msg))
        self.count += 1


def write_bag(
    out: Path,
    calib: KittiCalibration,
    frames: Iterator[KittiFrame],
    *,
    storage: str = "mcap",
    rate_hz: float | None = None,
    T_velo_from_imu: np.ndarray | None = None,
    odometry_rate_hz: float = 50.0,
    scan_period_s: float = 0.1,
) -> tuple[int, int]:
    """Write frames to a rosbag2 at `out` (`rate_hz`: stored as `RATE_KEY`); returns (messages written, frames).

    With `T_velo_from_imu` the bag also carries the odometry (module docstring): /tf odom -> base_link at
    `odometry_rate_hz`, /kitti/oxts/twist, and the clouds logged at stamp + `scan_period_s` / 2.
    """
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import TwistStamped
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from depth_completion_ros.ros.conversions import array_to_image, camera_model_to_camera_info, xyz_to_pointcloud2

    typestore = get_typestore(Stores.ROS2_KILTED)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    odometry = T_velo_from_imu is not None
    half_scan_ns = round(scan_period_s * 5e8) if odometry else 0
    n_msgs = n_frames = 0
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        if rate_hz is not None:
            writer.set_custom_data(RATE_KEY, repr(float(rate_hz)))
        conn_img = writer.add_connection(TOPICS["image"], "sensor_msgs/msg/Image", typestore=typestore)
        conn_info = writer.add_connection(TOPICS["camera_info"], "sensor_msgs/msg/CameraInfo", typestore=typestore)
        conn_pts = writer.add_connection(TOPICS["points"], "sensor_msgs/msg/PointCloud2", typestore=typestore)
        conn_tf = writer.add_connection(
            TOPICS["tf_static"], "tf2_msgs/msg/TFMessage", typestore=typestore, offered_qos_profiles=_static_qos()
        )
        odom = None
        if odometry:
            conn_dyn = writer.add_connection(ODOMETRY_TOPICS["tf"], "tf2_msgs/msg/TFMessage", typestore=typestore)
            conn_twist = writer.add_connection(
                ODOMETRY_TOPICS["twist"], "geometry_msgs/msg/TwistStamped", typestore=typestore
            )
            odom = _Odometry(writer, conn_dyn, odometry_rate_hz)
        twist = None
        for frame in frames:
            stamp = Time(sec=frame.stamp_ns // 1_000_000_000, nanosec=frame.stamp_ns % 1_000_000_000)
            if odometry and frame.imu_twist is None:
                raise DataError("--odometry needs an OXTS record for every frame")
            if n_frames == 0:
                t_static = frame.stamp_ns - (_Odometry.LEAD_NS if odometry else 0)
                T = calib.T_camera_from_velo
                if odometry:  # one tree: odom -> base_link -> velo_link -> camera
                    edges = [
                        _transform_msg(BASE_FRAME, VELO_FRAME, t_static, np.linalg.inv(T_velo_from_imu)),
                        _transform_msg(VELO_FRAME, CAMERA_FRAME, t_static, np.linalg.inv(T)),
                    ]
                else:
                    edges = [_transform_msg(CAMERA_FRAME, VELO_FRAME, t_static, T)]
                writer.write(conn_tf, t_static, serialize_message(TFMessage(transforms=edges)))
                n_msgs += 1
            if odom is not None:
                twist = frame.imu_twist
                odom.advance(frame.stamp_ns, twist)
                msg = TwistStamped()
                msg.header = Header(stamp=stamp, frame_id=BASE_FRAME)
                (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z) = map(float, twist[0])
                (msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z) = map(float, twist[1])
                writer.write(conn_twist, frame.stamp_ns, serialize_message(msg))
                n_msgs += 1
            cam_header = Header(stamp=stamp, frame_id=CAMERA_FRAME)
            writer.write(conn_img, frame.stamp_ns, serialize_message(array_to_image(frame.rgb, "rgb8", cam_header)))
            info = camera_model_to_camera_info(calib.camera, cam_header)
            writer.write(conn_info, frame.stamp_ns, serialize_message(info))
            if odom is not None:
                odom.advance(frame.stamp_ns + half_scan_ns, twist)  # the scan's end, before the cloud
            cloud = xyz_to_pointcloud2(
                frame.scan[:, :3], Header(stamp=stamp, frame_id=VELO_FRAME), fields="xyzi", intensity=frame.scan[:, 3]
            )
            writer.write(conn_pts, frame.stamp_ns + half_scan_ns, serialize_message(cloud))
            n_msgs += 3
            n_frames += 1
        if odom is not None and twist is not None:
            odom.advance(odom.t_ns + _Odometry.LEAD_NS, twist)
            n_msgs += odom.count
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
        "--repeat",
        type=positive_int,
        help=f"write the frames N times (default: 1 for a drive, {SINGLE_FRAME_REPEAT} for a single frame)",
    )
    parser.add_argument("--no-deskew", action="store_true", help="keep the raw (not motion-compensated) scans")
    parser.add_argument(
        "--odometry",
        action="store_true",
        help="raw scans plus /tf odom -> base_link and /kitti/oxts/twist from OXTS (an ego-motion source for "
        "the nodes' live de-skew; implies --no-deskew)",
    )
    parser.add_argument("--odometry-rate-hz", type=positive_float, default=50.0, help="/tf odom -> base_link rate")


def run(args: argparse.Namespace) -> int:
    """Convert; exit code 2 on bad input."""
    try:
        if args.out.exists():
            raise DataError(f"{args.out} exists; choose a new bag directory")
        repeat = args.repeat
        if repeat is None:
            repeat = SINGLE_FRAME_REPEAT if (Path(args.src) / "raw" / "lidar_data.bin").is_file() else 1
        if repeat < 1 or args.rate_hz <= 0 or args.odometry_rate_hz <= 0:
            raise DataError("--repeat must be >= 1, --rate-hz and --odometry-rate-hz > 0")
        calib, frames, _ = iter_kitti_frames(
            args.src,
            camera_index=args.camera,
            deskew=not (args.no_deskew or args.odometry),  # raw scans with --odometry: the node de-skews them
            repeat=repeat,
            rate_hz=args.rate_hz,
        )
        T_velo_from_imu = read_T_velo_from_imu(args.src) if args.odometry else None
        with atomic_directory(args.out) as tmp_bag:  # a failed run leaves no partial bag behind
            n_msgs, n_frames = write_bag(
                tmp_bag,
                calib,
                frames,
                storage=args.storage,
                rate_hz=args.rate_hz,
                T_velo_from_imu=T_velo_from_imu,
                odometry_rate_hz=args.odometry_rate_hz,
            )
    except (DepthCompletionError, OSError) as exc:
        print(f"depth-completion kitti-to-bag: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except ImportError as exc:  # a ROS message package the bag needs (tf2_msgs for /tf_static, ...)
        package = (exc.name or "a ROS 2 message package").split(".")[0]
        print(
            f"depth-completion kitti-to-bag: error: the ROS 2 message package '{package}' is not installed "
            f"(ROS: apt install ros-$ROS_DISTRO-{package.replace('_', '-')}; pip-only setup: bash scripts/setup.sh)",
            file=sys.stderr,
        )
        return 2
    topics = [*TOPICS.values(), *(ODOMETRY_TOPICS.values() if args.odometry else ())]
    print(f"wrote {args.out} ({args.storage}): {n_frames} frames, {n_msgs} messages on {', '.join(topics)}")
    return 0
