"""`depth_completion_node`: RGB + sparse depth (LiDAR cloud or depth image) → dense depth and confidence.

Subscribes (relative names, remappable; sensor-data QoS by default, parameters `qos_reliability`,
`qos_depth`):
  - `rgb/image` (sensor_msgs/Image, any colour encoding) and `rgb/camera_info` (its CameraInfo);
  - `input_type: pointcloud`: `lidar/points` (PointCloud2 with x, y, z in any frame; extrinsics from parameters,
    a KITTI calibration dir or tf);
  - `input_type: depth`: `sensor_depth/image` (16UC1 mm or 32FC1 m) and `sensor_depth/camera_info`.
Publishes (reliable): `depth` (32FC1 m, NaN = none, header = the RGB image's), `confidence` (32FC1 [0, 1]),
`camera_info` (the RGB CameraInfo, same header), `sparse_depth` (32FC1), `depth_color` (rgb8),
`points` (optional PointCloud2 XYZRGB from the dense depth, decimated), `stats` (NodeStats).
Inputs live under `rgb/`, `lidar/` and `sensor_depth/` (as depth_image_proc's `rgb/camera_info`), so the
output names `camera_info` and `points` stay unambiguous under remapping.

The inputs are synchronized (approximate time, `queue_size`, `slop`); a worker thread does the work, so the
executor never blocks: while it is busy only the newest synchronized set is kept and replaced sets are counted
as dropped.  A bad input is one throttled log line and a `frames_failed` count; the node keeps running.
Every RGB image received is accounted for in `stats`: processed, dropped (superseded), failed, unmatched (no
partners within `slop`) or waiting; when nothing is output for `input_timeout_s` while inputs arrive, a
throttled warning gives these counts and a counters-only `stats` message is published.  No callback lets an
error escape.  SIGINT / SIGTERM stop the node within `SHUTDOWN_GRACE_S` + ~0.5 s, even mid-frame.
Run: `ros2 run depth_completion_ros depth_completion_node --ros-args --params-file config/kitti.yaml`.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rclpy.node import Node

from depth_completion_ros.core.allocator import configure_allocator
from depth_completion_ros.core.errors import DataError, DepthCompletionError, ShapeError
from depth_completion_ros.core.projection import project_points, register_depth
from depth_completion_ros.ros.params import (
    DEPTH_COMPLETION_PARAMS,
    DepthCompletionNodeConfig,
    QosConfig,
    declare_parameters,
    depth_completion_config,
    read_parameters,
    updated_config,
)

__all__ = ["DepthCompletionNode", "InputMonitor", "Throttle", "failure_key", "input_qos", "main", "output_qos"]

NODE_NAME = "depth_completion_node"

_ITERATIONS_DEFAULT = next(p.default for p in DEPTH_COMPLETION_PARAMS if p.name == "iterations")

SHUTDOWN_GRACE_S = 1.5
"""On SIGINT / SIGTERM the worker gets this long to finish its frame; after it the process exits without it."""


class Throttle:
    """At most one message per key every `period_s` seconds (`ready(key)` says whether to log now)."""

    def __init__(self, period_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                return False
            self._last[key] = now
            return True


class InputMonitor:
    """Receipt times of the inputs: per-message (for latency stats) and per-topic (for silence warnings)."""

    def __init__(self, topics: Sequence[str], clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        start = clock()
        self.last_receipt: dict[str, float] = dict.fromkeys(topics, start)
        self.counts: dict[str, int] = dict.fromkeys(topics, 0)
        self._by_msg: OrderedDict[int, float] = OrderedDict()
        self._lock = threading.Lock()

    def receiver(self, topic: str) -> Callable[[Any], None]:
        """A callback recording the receipt of one message on `topic`."""

        def _receive(msg: Any) -> None:
            now = self._clock()
            with self._lock:
                self.last_receipt[topic] = now
                self.counts[topic] += 1
                self._by_msg[id(msg)] = now
                while len(self._by_msg) > 256:
                    self._by_msg.popitem(last=False)

        return _receive

    def receipt_times(self, msgs: Sequence[Any]) -> list[float]:
        """Receipt times of `msgs` (now for unknown ones), forgetting them."""
        now = self._clock()
        with self._lock:
            return [self._by_msg.pop(id(m), now) for m in msgs]

    def silent(self, timeout_s: float) -> list[tuple[str, float]]:
        """Topics without a message for more than `timeout_s`, with their silence in seconds."""
        now = self._clock()
        with self._lock:
            return [(t, now - last) for t, last in self.last_receipt.items() if now - last > timeout_s]


def failure_key(kind: str, text: str) -> str:
    """Throttle key of a failure: its kind and text with numbers blanked, so each distinct problem logs once
    per period while a problem repeating every frame (with changing numbers) is throttled."""
    return f"fail:{kind}:{re.sub(r'[0-9.]+', '#', text)[:100]}"


def input_qos(config: QosConfig) -> Any:
    """Input QoS: the sensor-data profile (best effort, volatile) or reliable, history depth `config.depth`."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability = ReliabilityPolicy.BEST_EFFORT if config.reliability == "best_effort" else ReliabilityPolicy.RELIABLE
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=config.depth,
        reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos(depth: int = 5) -> Any:
    """Output QoS: reliable, volatile, keep last `depth`."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def dense_points(depth: np.ndarray, rgb: np.ndarray, camera: Any, decimation: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points (N, 3) float32 m and colours (N, 3) uint8 of every `decimation`-th valid pixel."""
    h, w = depth.shape
    vs, us = np.mgrid[0:h:decimation, 0:w:decimation]
    z = depth[vs, us]
    valid = np.isfinite(z) & (z > 0)
    uv = np.stack([us[valid], vs[valid]], axis=1).astype(np.float64)
    xyz = np.asarray(camera.unproject(uv, z[valid].astype(np.float64)), dtype=np.float32).reshape(-1, 3)
    return xyz, np.ascontiguousarray(rgb[vs[valid], us[valid]])


class DepthCompletionNode(Node):
    """The node; see the module docstring.  Raises ValueError (naming the parameter) on bad parameters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from depth_completion_ros.core.completer import DepthCompleter
        from depth_completion_ros.msg import NodeStats
        from depth_completion_ros.ros.extrinsics import ExtrinsicsProvider
        from depth_completion_ros.ros.sync import SyncInput, subscribe_synchronized

        declare_parameters(self, DEPTH_COMPLETION_PARAMS)
        self.config: DepthCompletionNodeConfig = depth_completion_config(read_parameters(self, DEPTH_COMPLETION_PARAMS))
        cfg = self.config
        self.extrinsics = ExtrinsicsProvider(cfg.extrinsics, self)
        if cfg.input_type == "pointcloud":
            from depth_completion_ros.ros.deskew import Deskewer

            self.deskew = Deskewer.for_node(self, cfg.deskew, self.extrinsics)  # motion compensation stage
        self.completer = DepthCompleter(cfg.completer)
        warm_up_ms = self._warm_up()
        self.throttle = Throttle(2.0)
        self._silence_throttle = Throttle(max(cfg.input_timeout_s, 2.0))

        qos_out = output_qos()
        self.pub_depth = self.create_publisher(Image, "depth", qos_out)
        self.pub_conf = self.create_publisher(Image, "confidence", qos_out)
        self.pub_info = self.create_publisher(CameraInfo, "camera_info", qos_out)
        self.pub_sparse = self.create_publisher(Image, "sparse_depth", qos_out)
        self.pub_color = self.create_publisher(Image, "depth_color", qos_out)
        self.pub_points = self.create_publisher(PointCloud2, "points", qos_out)
        self.pub_stats = self.create_publisher(NodeStats, "stats", qos_out)
        self._NodeStats = NodeStats

        qos_in = input_qos(cfg.qos)
        if cfg.input_type == "pointcloud":
            specs = [
                (Image, cfg.image_topic),
                (CameraInfo, cfg.camera_info_topic),
                (PointCloud2, cfg.points_topic),
            ]
        else:
            specs = [
                (Image, cfg.image_topic),
                (CameraInfo, cfg.camera_info_topic),
                (Image, cfg.depth_topic),
                (CameraInfo, cfg.depth_camera_info_topic),
            ]
        self.monitor = InputMonitor([topic for _, topic in specs])
        inputs = [SyncInput(t, topic, qos_in, self.monitor.receiver(topic)) for t, topic in specs]
        self._sync, self._subs = subscribe_synchronized(
            self, inputs, cfg.sync.queue_size, cfg.sync.slop, self._on_synchronized, on_error=self._callback_error
        )
        self._image_topic = specs[0][1]
        self._input_topics = [topic for _, topic in specs]
        if cfg.completer.method != "default" and cfg.completer.iterations != _ITERATIONS_DEFAULT:
            self.completer.reconfigure(iterations=cfg.completer.iterations)  # else the checkpoint's own count

        self.frames_processed = 0
        self.frames_dropped = 0
        self.frames_failed = 0
        self.frames_matched = 0
        self._last_output = time.monotonic()
        self._received_at_output = 0  # RGB images received when the last output went out
        self._pending: tuple[tuple[Any, ...], list[float], float] | None = None
        self._in_progress = False
        self._cond = threading.Condition()
        self._publish_lock = threading.Lock()
        self._running = True
        self._worker = threading.Thread(target=self._work, name="depth_completion_worker", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(1.0, self._guarded("timer", self._check_inputs))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f"ready: input_type={cfg.input_type}, method={cfg.completer.method}, "
            f"model={self.completer.model_name}, iterations={self.completer.iterations}, "
            f"device={self.completer.device_name}, warm-up {warm_up_ms:.0f} ms, "
            f"extrinsics from {self.extrinsics.source}, sync queue_size={cfg.sync.queue_size} "
            f"slop={cfg.sync.slop} s, inputs: {', '.join(self.resolve_topic_name(t) for _, t in specs)}"
        )

    def _warm_up(self) -> float:
        """One small completion before "ready" (JIT compilation, thread pools, first allocations), so the first
        frame costs what the next ones do; returns its duration in ms. A failure is logged, not fatal."""
        t0 = time.monotonic()
        rgb = np.zeros((64, 96, 3), np.uint8)
        rgb[:, 48:] = 200
        sparse = np.zeros((64, 96), np.float32)
        sparse[::8, ::8] = 5.0
        try:
            self.completer.complete(rgb, sparse)
        except Exception as exc:  # never keep the node from starting
            self.get_logger().warning(f"warm-up failed ({exc!r}); the first frame will be slower")
        return (time.monotonic() - t0) * 1000.0

    # ----------------------------------------------------------------- executor side (never blocks)

    def _on_synchronized(self, *msgs: Any) -> None:
        t_sync = time.monotonic()
        receipts = self.monitor.receipt_times(msgs)
        with self._cond:
            self.frames_matched += 1
            if self._pending is not None:
                self.frames_dropped += 1
            self._pending = (msgs, receipts, t_sync)
            self._cond.notify()

    def _guarded(self, what: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """`callback` with its errors contained: logged (throttled), never raised into the executor."""

        def _call(*args: Any) -> Any:
            try:
                return callback(*args)
            except Exception as exc:
                self._callback_error(what, exc)
                return None

        return _call

    def _callback_error(self, what: str, exc: BaseException) -> None:
        if self.throttle.ready(failure_key(f"callback:{what}", str(exc))):
            self.get_logger().error(f"error in the {what} callback, ignored: {exc!r}")

    def accounting(self) -> dict[str, int]:
        """Fate of every RGB image received: received = processed + dropped + failed + unmatched + waiting."""
        with self._cond:
            received = self.monitor.counts[self._image_topic]
            matched, pending = self.frames_matched, int(self._pending is not None) + int(self._in_progress)
            processed, dropped, failed = self.frames_processed, self.frames_dropped, self.frames_failed
        queued = self._sync.queue_lengths()[0] if hasattr(self._sync, "queue_lengths") else 0
        # upstream message_filters keeps no counts: its waiting images are reported as unmatched
        unmatched = max(0, received - matched - queued)
        inputs_unmatched = sum(getattr(self._sync, "unmatched", [unmatched]))
        return {
            "received": received,
            "processed": processed,
            "dropped": dropped,
            "failed": failed,
            "unmatched": unmatched,
            "waiting": queued + pending,
            "inputs_unmatched": inputs_unmatched,
        }

    def _check_inputs(self) -> None:
        timeout = self.config.input_timeout_s
        silent = self.monitor.silent(timeout)
        if silent and self._silence_throttle.ready("silent"):
            names = ", ".join(f"{self.resolve_topic_name(t)} ({s:.0f} s)" for t, s in silent)
            self.get_logger().warning(
                f"inputs silent for more than input_timeout_s={timeout} s: {names}; "
                "check the topic names, remapping and QoS"
            )
        since = time.monotonic() - self._last_output
        if since <= timeout:
            return
        acc = self.accounting()
        self._publish_stats(self._NodeStats(), acc, since)
        if acc["received"] > self._received_at_output and self._silence_throttle.ready("no_output"):
            stamps = getattr(self._sync, "newest_stamps", lambda: [])()
            newest = ", ".join(
                f"{self.resolve_topic_name(t)} {'-' if st is None else f'{st * 1e-9:.3f}'}"
                for t, st in zip(self._input_topics, stamps, strict=False)
            )
            self.get_logger().warning(
                f"no output for {since:.0f} s: of {acc['received']} RGB images, {acc['processed']} processed, "
                f"{acc['dropped']} superseded, {acc['failed']} failed, {acc['unmatched']} unmatched (no partners "
                f"within slop={self.config.sync.slop} s), {acc['waiting']} waiting"
                + (f"; newest queued stamps: {newest}" if newest else "")
            )

    def _on_set_parameters(self, params: list[Any]) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        try:
            names = {s.name for s in DEPTH_COMPLETION_PARAMS}
            changes = {p.name: p.value for p in params if p.name in names}
            if not changes:
                return SetParametersResult(successful=True)
            try:
                new = updated_config(self.config, changes)
                old = self.config.completer
                if new.completer != old:  # iterations / max_depth: applied in memory, the checkpoint is never reloaded
                    self.completer.reconfigure(
                        iterations=new.completer.iterations if new.completer.iterations != old.iterations else None,
                        max_depth=new.completer.max_depth if new.completer.max_depth != old.max_depth else None,
                    )
            except ValueError as exc:  # out of range, or not applicable (ENet has no propagation steps)
                return SetParametersResult(successful=False, reason=str(exc))
            self.config = new
            note = ""
            if "iterations" in changes and new.completer.method != "default":
                note = (
                    f" (method {new.completer.method}: the model's propagation steps, from the next frame, no reload)"
                )
            self.get_logger().info(f"parameters changed: {changes}{note}")
            return SetParametersResult(successful=True)
        except Exception as exc:  # never raise into rclpy's parameter service
            self._callback_error("set-parameters", exc)
            return SetParametersResult(successful=False, reason=f"internal error: {exc!r}")

    # ----------------------------------------------------------------- worker thread

    def stop(self, timeout: float = SHUTDOWN_GRACE_S) -> bool:
        """Stop the worker thread: nothing is published after this returns; waits up to `timeout` s for the frame
        in progress.  Returns True when the worker has ended (False: still computing; it will not publish)."""
        with self._publish_lock, self._cond:  # waits for a publish in progress; none starts afterwards
            self._running = False
            self._cond.notify_all()
        self._worker.join(timeout=timeout)
        return not self._worker.is_alive()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._running and self._pending is None:
                    self._cond.wait()
                if not self._running:
                    return
                msgs, receipts, t_sync = self._pending
                self._pending = None
                self._in_progress = True
            try:
                self._process(msgs, receipts, t_sync)
            except DepthCompletionError as exc:  # bad input: MessageFormatError, CalibrationError, ...
                self._fail(type(exc).__name__, str(exc))
            except ValueError as exc:  # numpy / OpenCV shape problems from malformed inputs
                self._fail("ValueError", str(exc))
            except Exception as exc:  # keep the node alive whatever happens to one frame
                self._fail(type(exc).__name__, f"unexpected error: {exc!r}")
            finally:
                with self._cond:
                    self._in_progress = False

    def _fail(self, key: str, text: str) -> None:
        with self._cond:
            self.frames_failed += 1
        if self.throttle.ready(failure_key(key, text)):
            self.get_logger().warning(f"frame skipped ({key}): {text} [frames_failed={self.frames_failed}]")

    def _process(self, msgs: tuple[Any, ...], receipts: list[float], t_sync: float) -> None:
        from depth_completion_ros.ros import conversions as conv

        cfg = self.config
        t_start = time.monotonic()

        def tf_wait() -> float:  # hold the frame for its transform up to tf_timeout after it arrived
            return cfg.extrinsics.tf_timeout_s - (time.monotonic() - t_sync)

        image, info = msgs[0], msgs[1]
        rgb = conv.image_to_array(image, "rgb8")
        camera = conv.camera_info_to_model(info, rectified=cfg.rectified)
        h, w = rgb.shape[:2]
        cam_w, cam_h = camera.image_size
        if (w, h) != (cam_w, cam_h):
            raise ShapeError(f"image is {w}x{h} but its CameraInfo says {cam_w}x{cam_h}")
        camera_frame = image.header.frame_id or info.header.frame_id
        if cfg.input_type == "pointcloud":
            cloud = msgs[2]
            points, times = self.deskew.decode(cloud)  # finite points (+ per-point times when present)
            n_input = len(points)
            if n_input == 0:
                raise ShapeError(f"PointCloud2 on {cfg.points_topic} has no finite points")
            t_decoded = time.monotonic()
            points, _ = self.deskew.apply(points, times, cloud.header, image.header.stamp)  # to the image's instant
            T = self.extrinsics.lookup(camera_frame, cloud.header.frame_id, cloud.header.stamp, wait_s=tf_wait())
            sparse = project_points(points, T, camera, min_depth=cfg.min_depth, max_depth=cfg.completer.max_depth)
            if not sparse.any():
                raise DataError(
                    f"none of the {n_input} points of {cfg.points_topic} lands in the image (all behind the camera, "
                    f"outside its field of view or beyond [{cfg.min_depth}, {cfg.completer.max_depth}] m): "
                    "check the extrinsics"
                )
        else:
            depth_msg, depth_info = msgs[2], msgs[3]
            depth_src = conv.image_to_depth_metres(depth_msg)
            depth_cam = conv.camera_info_to_model(depth_info, rectified=cfg.rectified)
            dw, dh = depth_cam.image_size
            if depth_src.shape != (dh, dw):
                raise ShapeError(
                    f"depth image is {depth_src.shape[1]}x{depth_src.shape[0]} but its CameraInfo says {dw}x{dh}"
                )
            n_input = int(np.count_nonzero(depth_src > 0))
            t_decoded = time.monotonic()
            depth_frame = depth_msg.header.frame_id or depth_info.header.frame_id
            same = depth_frame == camera_frame and depth_src.shape == (h, w)
            if same:
                sparse = np.where(
                    (depth_src >= cfg.min_depth) & (depth_src <= cfg.completer.max_depth), depth_src, 0.0
                ).astype(np.float32)
            else:
                T = self.extrinsics.lookup(camera_frame, depth_frame, depth_msg.header.stamp, wait_s=tf_wait())
                sparse = register_depth(depth_src, depth_cam, camera, T)
                sparse = np.where((sparse >= cfg.min_depth) & (sparse <= cfg.completer.max_depth), sparse, 0.0).astype(
                    np.float32
                )
        t_projected = time.monotonic()
        if cfg.debug_delay_ms > 0:
            time.sleep(cfg.debug_delay_ms / 1000.0)
        depth, confidence = self.completer.complete(rgb, sparse, camera)
        t_completed = time.monotonic()

        header = image.header
        with self._publish_lock:
            if not self._running:  # shutting down: the context may be going away; publish nothing
                return
            self._publish_outputs(cfg, header, info, rgb, camera, sparse, depth, confidence)
            t_published = time.monotonic()
            with self._cond:
                self.frames_processed += 1
            self._last_output = t_published
            self._received_at_output = self.monitor.counts[self._image_topic]
            stats = self._NodeStats()
            stats.header = header
            ms = 1000.0
            stats.sync_wait_ms = float((t_sync - max(receipts)) * ms)
            stats.queue_wait_ms = float((t_start - t_sync) * ms)
            stats.decode_ms = float((t_decoded - t_start) * ms)
            stats.projection_ms = float((t_projected - t_decoded) * ms)
            stats.completion_ms = float((t_completed - t_projected) * ms)
            stats.publish_ms = float((t_published - t_completed) * ms)
            stats.total_ms = float((t_published - min(receipts)) * ms)
            stats.input_points = int(n_input)
            stats.sparse_coverage = float(np.count_nonzero(sparse > 0) / sparse.size)
            stats.dense_coverage = float(np.count_nonzero(np.isfinite(depth) & (depth > 0)) / depth.size)
            acc = self.accounting()
            acc["waiting"] -= 1  # this frame, counted as processed above, is still marked in progress
            self._publish_stats(stats, acc, 0.0)

    def _publish_stats(self, stats: Any, acc: dict[str, int], since_output_s: float) -> None:
        """Fill the method / accounting fields of `stats` (latencies as set by the caller) and publish it."""
        if stats.header.frame_id == "" and stats.header.stamp.sec == 0:
            stats.header.stamp = self.get_clock().now().to_msg()
        stats.method = str(self.config.completer.method)
        stats.model = str(self.completer.model_name)
        stats.device = self.completer.device_name
        stats.frames_processed = acc["processed"]
        stats.frames_dropped = acc["dropped"]
        stats.frames_failed = acc["failed"]
        stats.frames_received = acc["received"]
        stats.frames_unmatched = acc["unmatched"]
        stats.frames_waiting = max(0, acc["waiting"])
        stats.inputs_unmatched = acc["inputs_unmatched"]
        stats.since_output_s = float(since_output_s)
        self.pub_stats.publish(stats)

    def _publish_outputs(
        self, cfg: Any, header: Any, info: Any, rgb: Any, camera: Any, sparse: Any, depth: Any, confidence: Any
    ) -> None:
        from depth_completion_ros.core.visualize import colorize_depth
        from depth_completion_ros.ros import conversions as conv

        self.pub_depth.publish(conv.depth_metres_to_image(depth, header))
        self.pub_conf.publish(conv.array_to_image(np.asarray(confidence, dtype=np.float32), "32FC1", header))
        info_out = type(info)()
        info_out.header = header
        for field in ("height", "width", "distortion_model", "d", "k", "r", "p", "binning_x", "binning_y", "roi"):
            setattr(info_out, field, getattr(info, field))
        self.pub_info.publish(info_out)
        outputs = cfg.outputs
        # The visualization outputs are built only while someone subscribes (as image_pipeline's lazy publishers).
        if outputs.publish_sparse and self.pub_sparse.get_subscription_count() > 0:
            self.pub_sparse.publish(conv.depth_metres_to_image(sparse, header))
        if outputs.publish_color and self.pub_color.get_subscription_count() > 0:
            self.pub_color.publish(conv.array_to_image(colorize_depth(depth), "rgb8", header))
        if outputs.publish_points and self.pub_points.get_subscription_count() > 0:
            xyz, colors = dense_points(depth, rgb, camera, outputs.points_decimation)
            self.pub_points.publish(conv.xyz_to_pointcloud2(xyz, header, fields="xyzrgb", colors=colors))


def run_node(factory: Callable[[], Any], args: list[str] | None, name: str) -> int:
    """Init rclpy, build the node with `factory`, spin until SIGINT/SIGTERM; returns the exit code.

    Returns 2 (after one clear log line) when the node refuses its parameters or inputs at start.
    Shutdown order (rclpy's): the executor stops spinning, the node's worker is stopped and joined (up to
    `SHUTDOWN_GRACE_S`; it publishes nothing after that), the executor is shut down, the node destroyed, then
    the context.  The signal handlers are the package's own (rclpy's would invalidate the context while the
    worker may still publish); a worker still inside a long frame after the grace period is not waited for:
    the process exits at once (`os._exit`) after the context is shut down, so no thread outlives the interpreter.
    """
    import rclpy
    from rclpy.exceptions import NameValidationException, ParameterException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    configure_allocator()  # per-frame image buffers without page faults (core/allocator.py)
    stopping = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
        previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker_ended = True
    code = 0
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        try:
            try:
                node = factory()
            except (ValueError, DepthCompletionError, ParameterException, NameValidationException) as exc:
                rclpy.logging.get_logger(name).fatal(f"refusing to start: {exc}")
                return 2
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            # A persistent 10 Hz no-op timer wakes the executor so that a signal is seen within 0.1 s (a
            # spin_once timeout instead would build a new rcl timer at every wait).
            node.create_timer(0.1, lambda: None)
            try:
                while not stopping.is_set() and rclpy.ok():
                    executor.spin_once()
            except (KeyboardInterrupt, ExternalShutdownException):
                pass
            finally:
                stop = getattr(node, "stop", None)
                if stop is not None:
                    worker_ended = stop() is not False
                executor.shutdown(timeout_sec=1.0)
                executor.remove_node(node)
                node.destroy_node()
                if not worker_ended:
                    node.get_logger().warning(
                        f"the worker is still inside a frame after {SHUTDOWN_GRACE_S} s: exiting without it"
                    )
        finally:
            rclpy.try_shutdown()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not worker_ended:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run depth_completion_ros depth_completion_node`."""
    from depth_completion_ros.ros.params import prepare_ros_args

    try:
        args = prepare_ros_args(args)
    except ValueError as exc:
        print(f"[FATAL] [{NODE_NAME}]: refusing to start: {exc}", file=sys.stderr)
        return 2
    return run_node(DepthCompletionNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
