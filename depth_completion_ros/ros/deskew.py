"""The `deskew` stage of the nodes: LiDAR motion compensation between decode and projection.

The motion math is the core's (`core.projection.deskew_points`, `twist_from_poses`; point-time conventions in
`core.scan_time`); this module only finds the inputs:

- **Point times:** a per-point time field when the cloud has one (`t`, `time`, `timestamp`, `time_offset`,
  `offset_time`, or `time_sec` + `time_nsec`; unit and origin detected, see `core.scan_time`), else the azimuth
  model (`deskew_scan_period` s per revolution, `deskew_clockwise`; the header stamp is the instant the scan
  faced +x, as KITTI's).
- **Ego motion** (a constant twist over the scan interval, in the cloud's frame): tf (`odom_frame` -> the
  cloud's frame, looked up at both ends of the interval and interpolated there by tf; the twist is their SE(3)
  logarithm; when tf does not reach the scan's end yet, a window up to 0.2 s earlier), or the mean of the
  `TwistStamped` / `Odometry` messages of the interval (nearest within 0.5 s otherwise), or `Imu` angular rate
  (rotation only); topic twists are moved into the cloud's frame through tf.
- **Reference instant:** the target camera's stamp (the image's in depth_completion_node, the CameraInfo's in
  pointcloud_to_depth_node): every point is moved to where the sensor was at that instant, so the output's
  header stamp (that stamp) is the instant the points describe.  Uncompensated clouds keep their own stamp.

Modes: `off`; `auto` (default): compensate when ego motion is available, else pass the cloud through with one
warning; `on`: a frame without ego motion is skipped with a throttled error.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from depth_completion_ros.core.errors import CalibrationError, MessageFormatError
from depth_completion_ros.core.projection import deskew_points, finite_points, twist_from_poses
from depth_completion_ros.core.scan_time import TIME_FIELDS, find_time_field, relative_point_times
from depth_completion_ros.ros.params import DeskewConfig, ExtrinsicsConfig

__all__ = ["Deskewer", "TfEgoMotion", "TopicEgoMotion"]

# lookup(target_frame, source_frame, stamp_ns) -> T_target_from_source (4x4); stamp 0 = latest.
Lookup = Callable[[str, str, int], np.ndarray]
_NS = 1_000_000_000
_MIN_INTERVAL_NS = 10_000_000  # a twist from tf needs two distinct instants: at least 10 ms apart
TOPIC_MAX_GAP_NS = 500_000_000
TF_LAGS_NS = (0, 50_000_000, 100_000_000, 200_000_000)  # tf windows tried, shifted back by these


@dataclass(frozen=True)
class _Stamp:
    sec: int
    nanosec: int


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * _NS + int(stamp.nanosec)


class TfEgoMotion:
    """Twist of a frame from tf: the poses `odom_frame` <- frame at the two ends of an interval."""

    def __init__(self, lookup: Lookup, odom_frame: str) -> None:
        self.lookup = lookup
        self.odom_frame = odom_frame

    def describe(self) -> str:
        return f"tf {self.odom_frame} -> the cloud's frame"

    def twist(self, frame: str, t0_ns: int, t1_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """(v m/s, w rad/s) of `frame` in its own frame over [t0, t1]; CalibrationError when tf lacks it."""
        if t1_ns - t0_ns < _MIN_INTERVAL_NS:
            mid = (t0_ns + t1_ns) // 2
            t0_ns, t1_ns = mid - _MIN_INTERVAL_NS // 2, mid + _MIN_INTERVAL_NS // 2
        error: CalibrationError | None = None
        # Odometry often lags the LiDAR: when tf does not reach the end of the scan yet, the twist of a window
        # just before it is taken (constant-twist assumption), up to TF_MAX_LAG_NS back.
        for lag in TF_LAGS_NS:
            try:
                T0 = self.lookup(self.odom_frame, frame, t0_ns - lag)
                T1 = self.lookup(self.odom_frame, frame, t1_ns - lag)
            except CalibrationError as exc:
                error = error or exc
                continue
            return twist_from_poses(T0, T1, (t1_ns - t0_ns) * 1e-9)
        raise CalibrationError(f"no ego motion from tf {self.odom_frame} -> {frame}: {error}")


class TopicEgoMotion:
    """Twists from a TwistStamped / Odometry / Imu topic, kept for a few seconds; `add` is thread-safe.

    Args:
        kind: "twist", "odometry" or "imu" (angular rate only: the linear velocity is taken as zero).
        lookup: tf lookup, to move a twist given in another frame into the cloud's (latest transform).
    """

    def __init__(self, kind: str, topic: str, lookup: Lookup | None, history: int = 1000) -> None:
        self.kind = kind
        self.topic = topic
        self.lookup = lookup
        self._samples: deque[tuple[int, str, np.ndarray, np.ndarray]] = deque(maxlen=history)
        self._lock = threading.Lock()

    def describe(self) -> str:
        what = {"twist": "TwistStamped", "odometry": "Odometry", "imu": "Imu angular rate (rotation only)"}[self.kind]
        return f"{what} on {self.topic}"

    def add_message(self, msg: Any) -> None:
        """Store one message of the configured type."""
        if self.kind == "imu":
            a = msg.angular_velocity
            v, w, frame = np.zeros(3), np.array([a.x, a.y, a.z], float), msg.header.frame_id
        else:
            tw = msg.twist.twist if self.kind == "odometry" else msg.twist
            frame = msg.child_frame_id if self.kind == "odometry" else msg.header.frame_id
            v = np.array([tw.linear.x, tw.linear.y, tw.linear.z], float)
            w = np.array([tw.angular.x, tw.angular.y, tw.angular.z], float)
        self.add(_stamp_ns(msg.header.stamp), frame, v, w)

    def add(self, stamp_ns: int, frame: str, v: np.ndarray, w: np.ndarray) -> None:
        """Store a twist (v m/s of the frame's origin, w rad/s; both in `frame`) measured at `stamp_ns`."""
        if not (np.isfinite(v).all() and np.isfinite(w).all()):
            return
        with self._lock:
            self._samples.append((int(stamp_ns), frame.lstrip("/"), v, w))

    def twist(self, frame: str, t0_ns: int, t1_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean twist of the interval (or the nearest within 0.5 s), moved into `frame`."""
        with self._lock:
            samples = list(self._samples)
        inside = [s for s in samples if t0_ns <= s[0] <= t1_ns]
        if not inside:
            mid = (t0_ns + t1_ns) // 2
            near = [s for s in samples if abs(s[0] - mid) <= TOPIC_MAX_GAP_NS + (t1_ns - t0_ns) // 2]
            if not near:
                raise CalibrationError(f"no ego motion: no {self.describe()} message within 0.5 s of the scan")
            inside = [min(near, key=lambda s: abs(s[0] - mid))]
        src = inside[-1][1]
        v = np.mean([s[2] for s in inside], axis=0)
        w = np.mean([s[3] for s in inside], axis=0)
        frame = frame.lstrip("/")
        if not src or src == frame:
            return v, w
        if self.lookup is None:
            raise CalibrationError(f"no ego motion: the twist is in {src!r}, the cloud in {frame!r}, and no tf")
        try:
            T = self.lookup(frame, src, 0)  # T_cloud_from_src, latest (a rigid mount)
        except CalibrationError as exc:
            raise CalibrationError(f"no ego motion: cannot move the twist from {src!r} to {frame!r}: {exc}") from None
        R = T[:3, :3]
        lever = -R.T @ T[:3, 3]  # the cloud frame's origin, in the twist's frame
        return R @ (v + np.cross(w, lever)), R @ w


def _motion_message_type(source: str) -> type:
    """The message class of a topic ego-motion source; ValueError naming the parameter when not importable."""
    module, name = {
        "imu": ("sensor_msgs.msg", "Imu"),
        "odometry": ("nav_msgs.msg", "Odometry"),
        "twist": ("geometry_msgs.msg", "TwistStamped"),
    }[source]
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        raise ValueError(
            f"invalid parameter 'deskew_motion_source': {source} needs {module.split('.')[0]} (not installed)"
        ) from None


class Deskewer:
    """The deskew stage: `decode(cloud)` then `apply(points, times, cloud_header, target_stamp)`.

    Args:
        config: the nodes' `DeskewConfig`.
        motion: a `TfEgoMotion` / `TopicEgoMotion` (or anything with `twist(frame, t0_ns, t1_ns)` and
            `describe()`), None when there is no ego-motion source.
        logger: an rclpy logger (info, warning, debug).
    """

    def __init__(self, config: DeskewConfig, motion: Any, logger: Any) -> None:
        self.config = config
        self.motion = motion
        self.logger = logger
        self._warned = False
        self._bad_times_warned = False
        self._compensating = False
        self._layouts_seen: set[tuple[str, ...]] = set()
        self.frames_compensated = 0
        self.frames_uncompensated = 0
        if config.mode == "off":
            logger.info("deskew: off (clouds are projected as received)")
            return
        timing = (
            f"point times from a time field ({', '.join(TIME_FIELDS)} or time_sec+time_nsec), else the azimuth "
            f"model ({config.scan_period} s per revolution, {'clockwise' if config.clockwise else 'counter-clockwise'}"
            ", stamp = facing +x)"
        )
        if motion is None:
            self._warned = True
            logger.warning(
                f"deskew {config.mode}: no ego-motion source (deskew_motion_source none): "
                "scans are not motion-compensated"
            )
            return
        logger.info(
            f"deskew {config.mode}: ego motion from {motion.describe()}; {timing}; points moved to the camera's stamp"
        )

    @classmethod
    def for_node(cls, node: Any, config: DeskewConfig, extrinsics: Any) -> Deskewer:
        """Build the stage for an rclpy node: tf access (the extrinsics' tf when it uses tf, else its own
        listener) and the motion topic subscription."""
        logger = node.get_logger()
        if config.mode == "off" or config.motion_source == "none":
            return cls(config, None, logger)
        if getattr(extrinsics, "uses_tf", False):
            provider = extrinsics
        else:
            from depth_completion_ros.ros.extrinsics import ExtrinsicsProvider

            provider = ExtrinsicsProvider(ExtrinsicsConfig(use_tf=True), node)

        def lookup(target: str, source: str, stamp_ns: int) -> np.ndarray:
            return provider.lookup(target, source, _Stamp(stamp_ns // _NS, stamp_ns % _NS) if stamp_ns else None)

        if config.motion_source == "tf":
            return cls(config, TfEgoMotion(lookup, config.odom_frame), logger)
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        msg_type = _motion_message_type(config.motion_source)
        motion = TopicEgoMotion(config.motion_source, node.resolve_topic_name(config.motion_topic), lookup)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
        deskewer = cls(config, motion, logger)
        deskewer._subscription = node.create_subscription(msg_type, config.motion_topic, motion.add_message, qos)
        return deskewer

    # ------------------------------------------------------------------------------------------------ decode

    def decode(self, cloud: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Finite points of `cloud` ((N, >=3) float32, its frame, metres) and their capture times ((N,) float32 s
        relative to the header stamp) when the cloud has a time field and the stage is on; else times None.

        Per-point times that cannot be used (e.g. absolute times from a clock not synchronised to ROS time) fall
        back to the azimuth model with one warning in mode auto.

        Raises:
            MessageFormatError: malformed cloud, or (mode on) per-point times that cannot be used.
        """
        from depth_completion_ros.ros import conversions as conv

        if self.config.mode == "off":
            return finite_points(conv.pointcloud2_to_xyz(cloud)), None
        names = tuple(conv.cloud_field_names(cloud))
        field = find_time_field(names)
        if field is None:
            self._note_layout(names, "no per-point time field: azimuth model")
            return finite_points(conv.pointcloud2_to_xyz(cloud)), None
        try:
            times = relative_point_times(
                conv.pointcloud2_to_structured(cloud),
                field,
                stamp_ns=_stamp_ns(cloud.header.stamp),
                unit=self.config.time_unit,
            )
        except MessageFormatError as exc:
            if self.config.mode == "on":
                raise
            if not self._bad_times_warned:  # e.g. a LiDAR clock not synchronised to ROS time
                self._bad_times_warned = True
                self.logger.warning(f"deskew auto: per-point times unusable, using the azimuth model: {exc}")
            return finite_points(conv.pointcloud2_to_xyz(cloud)), None
        xyz = conv.pointcloud2_to_xyz(cloud, skip_nans=False)
        self._note_layout(names, f"point times from {times.describe()}")
        stacked = np.empty((xyz.shape[0], 4), dtype=np.float32)
        stacked[:, :3] = xyz
        stacked[:, 3] = times.times
        stacked = finite_points(stacked)
        return stacked, stacked[:, 3]

    def _note_layout(self, names: tuple[str, ...], text: str) -> None:
        if names not in self._layouts_seen and len(self._layouts_seen) < 16:
            self._layouts_seen.add(names)
            self.logger.info(f"deskew: {text} (cloud fields {', '.join(names)})")

    # ------------------------------------------------------------------------------------------------- apply

    def apply(
        self, points: np.ndarray, times: np.ndarray | None, cloud_header: Any, target_stamp: Any
    ) -> tuple[np.ndarray, Any]:
        """`points` moved to `target_stamp` (the camera's instant), and the stamp they now describe.

        Returns (points, target_stamp) when compensated, else (points unchanged, the cloud's stamp).

        Raises:
            CalibrationError: mode "on" and no ego motion for this scan.
        """
        cfg = self.config
        if cfg.mode == "off" or self.motion is None or len(points) == 0:
            return points, cloud_header.stamp
        stamp_ns = _stamp_ns(cloud_header.stamp)
        reference = (_stamp_ns(target_stamp) - stamp_ns) * 1e-9
        if times is not None:
            t_lo, t_hi = float(times.min()), float(times.max())
        else:
            t_lo, t_hi = -cfg.scan_period / 2, cfg.scan_period / 2
        if t_lo == t_hi == reference:
            return points, target_stamp  # captured at one instant, the camera's: nothing moves
        lo, hi = min(t_lo, reference), max(t_hi, reference)
        frame = cloud_header.frame_id
        try:
            if not frame:
                raise CalibrationError("the cloud has an empty frame_id")
            v, w = self.motion.twist(frame, stamp_ns + round(lo * 1e9), stamp_ns + round(hi * 1e9))
        except CalibrationError as exc:
            self.frames_uncompensated += 1
            if cfg.mode == "on":
                raise
            if not self._warned:
                self._warned = True
                self.logger.warning(f"deskew auto: scans are not motion-compensated: {exc}")
            self._compensating = False
            return points, cloud_header.stamp
        if not self._compensating and self._warned:
            self.logger.info("deskew: ego motion available, scans are compensated")
        self._compensating = True
        self.frames_compensated += 1
        out = deskew_points(
            points,
            v,
            w,
            times=times,
            scan_period=cfg.scan_period,
            clockwise=cfg.clockwise,
            reference_time=reference,
        )
        return out, target_stamp
