"""Extrinsics `T_camera_from_source` (4×4 float64, source frame → camera optical frame, metres).

Sources, in order: parameters (`extrinsic_matrix`, or `extrinsic_xyz` + `extrinsic_quat_xyzw`; always win),
a KITTI raw calibration directory, then tf — `tf2_ros.Buffer` + `TransformListener` when importable, else
`TransformBuffer`, a small equivalent fed from `/tf` and `/tf_static` by this module.

`TransformBuffer` follows tf2's lookup semantics: frames form a tree; `lookup(target, source, t)` chains the
edges through the common ancestor; static edges hold at every time; dynamic edges are interpolated (linear
translation, slerp rotation) between the two stamps around `t`, and `t` = None/0 means "latest" (the latest
common time of the dynamic edges on the path, as tf2's time 0); extrapolation beyond the stored stamps fails.
A lookup may wait up to `timeout_s` for the transform to arrive, as a tf2 message filter holds a message:
the first frames of a bag or a driver then do not race `/tf_static`.

Hostile or broken `/tf` input never reaches a lookup: a transform with an empty frame name, parent == child,
a zero / non-unit / non-finite quaternion, a non-finite translation, or an edge that would close a loop is
refused (`add_tf_message` stores the others and returns the reasons; the node logs them, throttled).  The buffer
is bounded: at most `max_frames` edges (the least recently received edge not used by a lookup in the last
`max_age_s` is shed first), dynamic edges not received for `max_age_s` are shed, and each dynamic edge keeps at
most `max_stamps` stamps; `shed` counts what the bounds removed.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from depth_completion_ros.core.errors import CalibrationError
from depth_completion_ros.core.projection import check_rigid_transform
from depth_completion_ros.ros.params import ExtrinsicsConfig

__all__ = [
    "ExtrinsicsProvider",
    "TransformBuffer",
    "matrix_from_xyz_quat",
    "quat_xyzw_from_matrix",
    "transform_msg_to_matrix",
]


QUAT_NORM_TOLERANCE = 0.01
"""A /tf quaternion is refused when |‖q‖² − 1| exceeds this (tf2's TF_DENORMALIZED_QUATERNION test)."""


def matrix_from_xyz_quat(xyz: Sequence[float], quat_xyzw: Sequence[float]) -> np.ndarray:
    """4×4 float64 from a translation (m) and a quaternion (x, y, z, w; normalized here).

    Raises:
        CalibrationError: a non-finite value or a zero quaternion.
    """
    x, y, z, w = (float(q) for q in quat_xyzw)
    if not all(math.isfinite(v) for v in (x, y, z, w)):
        raise CalibrationError(f"quaternion contains NaN or inf: {[x, y, z, w]}")
    if not all(math.isfinite(float(v)) for v in xyz):
        raise CalibrationError(f"translation contains NaN or inf: {[float(v) for v in xyz]}")
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 1e-12:
        raise CalibrationError("zero quaternion")
    x, y, z, w = x / n, y / n, z / n, w / n
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = [float(v) for v in xyz]
    return T


def quat_xyzw_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a 3×3 rotation matrix."""
    R = np.asarray(R, dtype=np.float64)[:3, :3]
    t = np.trace(R)
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = math.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k]) * 2
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def transform_msg_to_matrix(transform: Any, *, strict: bool = False) -> np.ndarray:
    """4×4 float64 of a `geometry_msgs/Transform` (maps child-frame points into the parent frame).

    Raises:
        CalibrationError: non-finite values, a zero quaternion, or (`strict`, as tf2 for /tf input) a quaternion
            whose squared norm is off 1 by more than `QUAT_NORM_TOLERANCE`.
    """
    t, r = transform.translation, transform.rotation
    q = (float(r.x), float(r.y), float(r.z), float(r.w))
    T = matrix_from_xyz_quat((t.x, t.y, t.z), q)
    if strict and abs(sum(v * v for v in q) - 1.0) > QUAT_NORM_TOLERANCE:
        raise CalibrationError(f"quaternion {list(q)} is not normalized")
    return T


def _interpolate(T0: np.ndarray, T1: np.ndarray, a: float) -> np.ndarray:
    """Linear translation and slerp rotation between two rigid transforms, a in [0, 1]."""
    q0, q1 = quat_xyzw_from_matrix(T0), quat_xyzw_from_matrix(T1)
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + a * (q1 - q0)
    else:
        theta = math.acos(min(dot, 1.0))
        q = (math.sin((1 - a) * theta) * q0 + math.sin(a * theta) * q1) / math.sin(theta)
    xyz = (1 - a) * T0[:3, 3] + a * T1[:3, 3]
    return matrix_from_xyz_quat(xyz, q)


def _strip(frame: str) -> str:
    return frame[1:] if frame.startswith("/") else frame


MAX_FRAME_NAME = 256
"""Longest frame name accepted from /tf, characters."""


class TransformBuffer:
    """Static and time-stamped transforms between named frames, with tf2 lookup semantics; thread-safe.

    Args:
        cache_time_s: dynamic transforms older than the newest of their edge by more than this are discarded.
        max_frames: most edges (child frames) kept; beyond it the least recently received edge that no lookup
            used in the last `max_age_s` is shed (a new frame is refused when every edge is in use).
        max_age_s: a dynamic edge not received for this long (monotonic seconds) is shed, unless a lookup used it
            in that time.
        max_stamps: most stamps kept per dynamic edge (the oldest go first).
        clock: monotonic seconds (tests).
    """

    def __init__(
        self,
        cache_time_s: float = 10.0,
        *,
        max_frames: int = 1000,
        max_age_s: float = 60.0,
        max_stamps: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache_ns = int(cache_time_s * 1e9)
        self.max_frames = int(max_frames)
        self.max_age_s = float(max_age_s)
        self.max_stamps = int(max_stamps)
        self._clock = clock
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}  # child -> T_parent_from_child
        self._dynamic: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        self._received: OrderedDict[str, float] = OrderedDict()  # child -> last receipt, least recent first
        self._used: dict[str, float] = {}  # child -> last lookup that went through its edge
        self._next_age_check = 0.0
        self.shed = 0
        """Edges removed by the bounds (frame count or age) since construction."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._version = 0  # bumped by every stored transform (waiting lookups retry on change)

    def set_transform(
        self, parent: str, child: str, stamp_ns: int, T_parent_from_child: np.ndarray, *, static: bool
    ) -> None:
        """Store the edge parent ← child (4×4 maps child-frame points into `parent`).

        Raises:
            CalibrationError: empty / equal / over-long frame names, a non-rigid or non-finite matrix, an edge
                that would close a loop, or a new frame while the buffer is full of edges in use.
        """
        parent, child = _strip(str(parent)), _strip(str(child))
        if not parent or not child or parent == child or max(len(parent), len(child)) > MAX_FRAME_NAME:
            raise CalibrationError(f"invalid transform frames: parent {parent[:80]!r}, child {child[:80]!r}")
        T = check_rigid_transform(T_parent_from_child, f"transform {parent!r}<-{child!r}")
        now = self._clock()
        with self._lock:
            if self._parent.get(child) != parent and child in self._chain(parent, limit=self.max_frames + 2):
                raise CalibrationError(f"transform {parent!r}<-{child!r} would close a loop of frames")
            if child not in self._parent:
                self._make_room(now)
            self._version += 1
            self._changed.notify_all()
            self._parent[child] = parent
            self._received[child] = now
            self._received.move_to_end(child)
            if now >= self._next_age_check:
                self._shed_aged(now)
            if static:
                self._static[child] = T
                self._dynamic.pop(child, None)
                return
            self._static.pop(child, None)
            stamps, mats = self._dynamic.setdefault(child, ([], []))
            i = bisect.bisect_left(stamps, stamp_ns)
            if i < len(stamps) and stamps[i] == stamp_ns:
                mats[i] = T
            else:
                stamps.insert(i, stamp_ns)
                mats.insert(i, T)
            cutoff = stamps[-1] - self._cache_ns
            k = max(bisect.bisect_left(stamps, cutoff), len(stamps) - self.max_stamps)
            if k > 0:
                del stamps[:k], mats[:k]

    def _remove(self, child: str) -> None:
        self._parent.pop(child, None)
        self._static.pop(child, None)
        self._dynamic.pop(child, None)
        self._received.pop(child, None)
        self._used.pop(child, None)
        self.shed += 1

    def _in_use(self, child: str, now: float) -> bool:
        return now - self._used.get(child, -math.inf) < self.max_age_s

    def _make_room(self, now: float) -> None:
        """Shed the least recently received edge not in use when a new edge would exceed `max_frames`."""
        if len(self._parent) < self.max_frames:
            return
        victim = next((c for c in self._received if not self._in_use(c, now)), None)
        if victim is None:
            raise CalibrationError(f"transform buffer full ({self.max_frames} frames, all in use)")
        self._remove(victim)

    def _shed_aged(self, now: float) -> None:
        """Shed dynamic edges not received for `max_age_s` (and not used by a lookup in that time)."""
        self._next_age_check = now + min(1.0, self.max_age_s / 4)
        old = [
            c
            for c, t in self._received.items()
            if now - t > self.max_age_s and c in self._dynamic and not self._in_use(c, now)
        ]
        for child in old:
            self._remove(child)

    def add_tf_message(self, msg: Any, *, static: bool) -> list[str]:
        """Store every valid `geometry_msgs/TransformStamped` of a `tf2_msgs/TFMessage`.

        Returns:
            One reason per refused transform (bad frames, non-finite or non-unit quaternion, non-finite
            translation, loop, full buffer); the valid transforms of the message are stored all the same.
        """
        refused = []
        for ts in msg.transforms:
            try:
                stamp = ts.header.stamp
                self.set_transform(
                    ts.header.frame_id,
                    ts.child_frame_id,
                    int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec),
                    transform_msg_to_matrix(ts.transform, strict=True),
                    static=static,
                )
            except (CalibrationError, AttributeError, TypeError, ValueError, OverflowError) as exc:  # noqa: PERF203
                parent = str(getattr(getattr(ts, "header", None), "frame_id", "?"))[:80]
                child = str(getattr(ts, "child_frame_id", "?"))[:80]
                refused.append(f"{parent!r}<-{child!r}: {exc}")
        return refused

    def frames(self) -> set[str]:
        with self._lock:
            return set(self._parent) | set(self._parent.values())

    def __len__(self) -> int:
        """Number of edges (child frames) stored."""
        with self._lock:
            return len(self._parent)

    def _chain(self, frame: str, limit: int = 100_000) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > limit:
                raise CalibrationError(f"transform loop at frame {frame!r}")
        return chain

    def lookup(self, target: str, source: str, stamp_ns: int | None = None, *, timeout_s: float = 0.0) -> np.ndarray:
        """`T_target_from_source` (4×4 float64) at `stamp_ns` (None or 0: latest), waiting up to `timeout_s`
        seconds for transforms that are not there yet.

        Raises:
            CalibrationError: unknown frames, frames not connected, or `stamp_ns` outside the stored interval
            of a dynamic edge on the path (after `timeout_s`).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                seen = self._version
            try:
                return self._lookup_now(target, source, stamp_ns)
            except CalibrationError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                with self._changed:
                    if self._version == seen:
                        self._changed.wait(remaining)

    def _lookup_now(self, target: str, source: str, stamp_ns: int | None) -> np.ndarray:
        target, source = _strip(target), _strip(source)
        if target == source:
            return np.eye(4)
        with self._lock:
            up_src, up_tgt = self._chain(source), self._chain(target)
            common = next((f for f in up_src if f in set(up_tgt)), None)
            if common is None:
                known = sorted(set(self._parent) | set(self._parent.values()))
                raise CalibrationError(
                    f"no transform from {source!r} to {target!r} (frames not connected; known: {known})"
                )
            edges_src = up_src[: up_src.index(common)]
            edges_tgt = up_tgt[: up_tgt.index(common)]
            now = self._clock()
            for child in edges_src + edges_tgt:
                self._used[child] = now
            if not stamp_ns:
                latest = [self._dynamic[c][0][-1] for c in edges_src + edges_tgt if c in self._dynamic]
                stamp_ns = min(latest) if latest else 0
            T_common_from_source = self._to_ancestor(edges_src, stamp_ns, target, source)
            T_common_from_target = self._to_ancestor(edges_tgt, stamp_ns, target, source)
        return np.linalg.inv(T_common_from_target) @ T_common_from_source

    def _to_ancestor(self, children: list[str], stamp_ns: int, target: str, source: str) -> np.ndarray:
        T = np.eye(4)
        for child in children:
            T = self._edge(child, stamp_ns, target, source) @ T
        return T

    def _edge(self, child: str, stamp_ns: int, target: str, source: str) -> np.ndarray:
        if child in self._static:
            return self._static[child]
        stamps, mats = self._dynamic[child]
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return mats[i]
        if i == 0 or i == len(stamps):
            raise CalibrationError(
                f"no transform from {source!r} to {target!r} at t={stamp_ns * 1e-9:.3f} s: edge "
                f"{self._parent[child]!r}<-{child!r} known for [{stamps[0] * 1e-9:.3f}, {stamps[-1] * 1e-9:.3f}] s"
            )
        a = (stamp_ns - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
        return _interpolate(mats[i - 1], mats[i], a)


class ExtrinsicsProvider:
    """`T_camera_from_source` for each frame, from parameters, a KITTI calibration dir, or tf.

    Args:
        config: where the extrinsics come from.
        node: the rclpy node (needed only for tf; None for parameters / KITTI).
        read_kitti: optional override of `core.calibration.read_kitti_raw_calibration` (tests).
    """

    def __init__(
        self, config: ExtrinsicsConfig, node: Any = None, *, read_kitti: Callable[..., Any] | None = None
    ) -> None:
        self.config = config
        self.node = node
        self._fixed: np.ndarray | None = None
        self._tf2_buffer: Any = None
        self._tf2_listener: Any = None
        self._buffer: TransformBuffer | None = None
        self._subscriptions: list[Any] = []
        self._tf_unavailable = False
        self.tf_refused = 0
        """/tf and /tf_static transforms refused as invalid since start."""
        if config.matrix is not None:
            self._fixed = np.asarray(config.matrix, dtype=np.float64).reshape(4, 4)
            self.source = "parameter extrinsic_matrix"
        elif config.xyz is not None and config.quat_xyzw is not None:
            self._fixed = matrix_from_xyz_quat(config.xyz, config.quat_xyzw)
            self.source = "parameters extrinsic_xyz + extrinsic_quat_xyzw"
        elif config.kitti_calib_dir:
            self._fixed = self._kitti(Path(config.kitti_calib_dir), read_kitti)
            self.source = f"KITTI calibration {config.kitti_calib_dir}"
        if self._fixed is not None:  # refused at start (a reflection, det -1, or a non-rigid matrix), not per frame
            self._fixed = check_rigid_transform(self._fixed, f"extrinsics from {self.source}")
        if self._fixed is not None:
            pass
        elif config.use_tf:
            if node is None:
                raise CalibrationError("extrinsics from tf need a node")
            self._start_tf(node)
        else:
            raise CalibrationError(
                "no extrinsics: set extrinsic_matrix, extrinsic_xyz + extrinsic_quat_xyzw, kitti_calib_dir, or use_tf"
            )

    def _kitti(self, calib_dir: Path, read_kitti: Callable[..., Any] | None) -> np.ndarray:
        if read_kitti is None:
            from depth_completion_ros.core.calibration import read_kitti_raw_calibration

            read_kitti = read_kitti_raw_calibration
        calib = read_kitti(
            calib_dir / "calib_cam_to_cam.txt",
            calib_dir / "calib_velo_to_cam.txt",
            camera_index=self.config.kitti_camera_index,
        )
        return np.asarray(calib.T_camera_from_velo, dtype=np.float64)

    def _start_tf(self, node: Any) -> None:
        from depth_completion_ros.ros.compat import tf2_ros

        if tf2_ros is not None:
            self._tf2_buffer = tf2_ros.Buffer()
            self._tf2_listener = tf2_ros.TransformListener(self._tf2_buffer, node)
            self.source = "tf2_ros"
            return
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        self._buffer = TransformBuffer()
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            # pip-only setup without the tf2_msgs message package: no /tf; lookups fail with a clear message
            self.source = "tf (unavailable: tf2_msgs not installed)"
            self._tf_unavailable = True
            return
        dynamic_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        static_qos = QoSProfile(
            depth=100,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._subscriptions = [
            node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), dynamic_qos),
            node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), static_qos),
        ]
        self.source = "tf (/tf, /tf_static; built-in buffer)"

    def _on_tf(self, msg: Any, static: bool) -> None:
        """/tf or /tf_static callback: store the valid transforms; bad ones and shed frames are counted and logged
        (at most one warning each per 5 s); nothing escapes (a bad message never stops the node)."""
        buf = self._buffer
        if buf is None:
            return
        shed_before = buf.shed
        try:
            refused = buf.add_tf_message(msg, static=static)
        except Exception as exc:  # a message that is not a TFMessage at all
            refused = [f"unreadable message: {exc!r}"]
        topic = "/tf_static" if static else "/tf"
        log = self.node.get_logger()
        if refused:
            self.tf_refused += len(refused)
            log.warning(
                f"{topic}: refused {len(refused)} transform(s), e.g. {refused[0][:300]} "
                f"[tf_refused={self.tf_refused}; the extrinsics in use are unchanged]",
                throttle_duration_sec=5.0,
            )
        if buf.shed != shed_before:
            log.warning(
                f"tf buffer bound: shed {buf.shed - shed_before} frame(s) (at most {buf.max_frames} frames, dynamic "
                f"ones kept {buf.max_age_s:.0f} s after their last message) [tf_shed={buf.shed}]",
                throttle_duration_sec=5.0,
            )

    @property
    def uses_tf(self) -> bool:
        """True when lookups go to tf (no fixed extrinsics): `lookup` then serves any frame pair and time."""
        return self._fixed is None

    @property
    def buffer(self) -> TransformBuffer | None:
        """The built-in transform buffer (None unless tf is used without tf2_ros)."""
        return self._buffer

    def lookup(self, camera_frame: str, source_frame: str, stamp: Any = None, *, wait_s: float = 0.0) -> np.ndarray:
        """`T_camera_from_source` (4×4 float64) at `stamp` (a builtin_interfaces Time or None = latest); tf
        lookups wait up to `wait_s` seconds for the transform (the node's `tf_timeout` minus the frame's age).

        Raises:
            CalibrationError: the transform is not available (after `wait_s`); the caller skips the frame.
        """
        if self._fixed is not None:
            return self._fixed
        if camera_frame and camera_frame.lstrip("/") == source_frame.lstrip("/"):
            return np.eye(4)
        stamp_ns = 0 if stamp is None else int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
        if self._tf2_buffer is not None:
            from rclpy.duration import Duration
            from rclpy.time import Time

            try:
                ts = self._tf2_buffer.lookup_transform(
                    camera_frame, source_frame, Time(nanoseconds=stamp_ns), timeout=Duration(seconds=max(wait_s, 0.0))
                )
            except Exception as exc:  # tf2 LookupException / ExtrapolationException / ConnectivityException
                raise CalibrationError(
                    f"no transform from {source_frame!r} to {camera_frame!r}{_waited(wait_s)}: {exc}"
                ) from exc
            return transform_msg_to_matrix(ts.transform)
        if self._buffer is None:
            raise CalibrationError("no extrinsics source")
        if self._tf_unavailable:
            raise CalibrationError(
                "tf unavailable (neither tf2_ros nor tf2_msgs importable): set extrinsic_matrix, "
                "extrinsic_xyz + extrinsic_quat_xyzw or kitti_calib_dir"
            )
        if not camera_frame or not source_frame:
            raise CalibrationError(
                f"empty frame_id (camera {camera_frame!r}, source {source_frame!r}): cannot look up tf"
            )
        try:
            return self._buffer.lookup(camera_frame, source_frame, stamp_ns, timeout_s=max(wait_s, 0.0))
        except CalibrationError as exc:
            raise CalibrationError(f"{exc}{_waited(wait_s)}") from None


def _waited(wait_s: float) -> str:
    return f" (after waiting {wait_s:.2f} s: tf_timeout)" if wait_s > 0 else ""
