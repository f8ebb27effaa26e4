"""`pointcloud_to_depth_node`: LiDAR PointCloud2 + camera CameraInfo → sparse depth image in that camera.

Subscribes (relative, remappable, sensor-data QoS by default): `lidar/points` (PointCloud2),
`rgb/camera_info` (the target camera's CameraInfo).  Publishes (reliable), as image_pipeline's registered depth:
`depth_registered/image` (32FC1 metres, NaN = no return, header: the camera's frame_id and the cloud's stamp, or
the CameraInfo's when the cloud was motion-compensated to it, see ros/deskew.py) and `depth_registered/camera_info`
(the CameraInfo with that header); names that never collide with depth_completion_node's outputs in the same
namespace, and that its depth input can be remapped to.
Same projection (core.projection.project_points) and extrinsics (parameters, KITTI dir, tf) as
depth_completion_node.  The projection is cheap, so it runs in the subscription callback.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rclpy.node import Node

from depth_completion_ros.core.errors import DepthCompletionError, ShapeError
from depth_completion_ros.core.projection import project_points
from depth_completion_ros.ros.depth_completion_node import (
    InputMonitor,
    Throttle,
    failure_key,
    input_qos,
    output_qos,
    run_node,
)
from depth_completion_ros.ros.params import (
    POINTCLOUD_TO_DEPTH_PARAMS,
    PointcloudToDepthNodeConfig,
    declare_parameters,
    pointcloud_to_depth_config,
    read_parameters,
)

__all__ = ["PointcloudToDepthNode", "main"]

NODE_NAME = "pointcloud_to_depth_node"


class PointcloudToDepthNode(Node):
    """See the module docstring.  Raises ValueError (naming the parameter) on bad parameters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from depth_completion_ros.ros.extrinsics import ExtrinsicsProvider
        from depth_completion_ros.ros.sync import SyncInput, subscribe_synchronized

        declare_parameters(self, POINTCLOUD_TO_DEPTH_PARAMS)
        self.config: PointcloudToDepthNodeConfig = pointcloud_to_depth_config(
            read_parameters(self, POINTCLOUD_TO_DEPTH_PARAMS)
        )
        cfg = self.config
        self.extrinsics = ExtrinsicsProvider(cfg.extrinsics, self)
        from depth_completion_ros.ros.deskew import Deskewer

        self.deskew = Deskewer.for_node(self, cfg.deskew, self.extrinsics)  # motion compensation stage
        self.throttle = Throttle(2.0)
        self.frames_processed = 0
        self.frames_failed = 0
        self.pub_depth = self.create_publisher(Image, "depth_registered/image", output_qos())
        self.pub_info = self.create_publisher(CameraInfo, "depth_registered/camera_info", output_qos())
        qos_in = input_qos(cfg.qos)
        topics = [cfg.points_topic, cfg.camera_info_topic]
        self.monitor = InputMonitor(topics)
        inputs = [
            SyncInput(PointCloud2, cfg.points_topic, qos_in, self.monitor.receiver(cfg.points_topic)),
            SyncInput(CameraInfo, cfg.camera_info_topic, qos_in, self.monitor.receiver(cfg.camera_info_topic)),
        ]
        self._sync, self._subs = subscribe_synchronized(
            self, inputs, cfg.sync.queue_size, cfg.sync.slop, self._on_synchronized, on_error=self._callback_error
        )
        self.get_logger().info(
            f"ready: extrinsics from {self.extrinsics.source}, sync queue_size={cfg.sync.queue_size} "
            f"slop={cfg.sync.slop} s, inputs: {', '.join(self.resolve_topic_name(t) for t in topics)}"
        )

    def _on_synchronized(self, cloud: Any, info: Any) -> None:
        try:
            self._process(cloud, info)
        except (DepthCompletionError, ValueError) as exc:
            self._fail(type(exc).__name__, str(exc))
        except Exception as exc:  # one bad frame never kills the node
            self._fail(type(exc).__name__, f"unexpected error: {exc!r}")

    def _callback_error(self, what: str, exc: BaseException) -> None:
        """A receive / matcher callback raised: one throttled line; the executor never sees it."""
        if self.throttle.ready(failure_key(f"callback:{what}", str(exc))):
            self.get_logger().error(f"error in the {what} callback, ignored: {exc!r}")

    def _fail(self, key: str, text: str) -> None:
        self.frames_failed += 1
        if self.throttle.ready(failure_key(key, text)):
            self.get_logger().warning(f"frame skipped ({key}): {text} [frames_failed={self.frames_failed}]")

    def _process(self, cloud: Any, info: Any) -> None:
        from depth_completion_ros.ros import conversions as conv

        cfg = self.config
        t0 = time.monotonic()
        camera = conv.camera_info_to_model(info, rectified=cfg.rectified)
        points, times = self.deskew.decode(cloud)  # finite points (+ per-point times when present)
        if len(points) == 0:
            raise ShapeError(f"PointCloud2 on {cfg.points_topic} has no finite points")
        # de-skewed points describe the CameraInfo's instant, which then stamps the output
        points, stamp = self.deskew.apply(points, times, cloud.header, info.header.stamp)
        T = self.extrinsics.lookup(info.header.frame_id, cloud.header.frame_id, cloud.header.stamp)
        depth = project_points(points, T, camera, min_depth=cfg.min_depth, max_depth=cfg.max_depth)
        header = type(info.header)()
        header.frame_id = info.header.frame_id
        header.stamp = stamp
        self.pub_depth.publish(conv.depth_metres_to_image(depth, header))
        info_out = type(info)()
        info_out.header = header
        for field in ("height", "width", "distortion_model", "d", "k", "r", "p", "binning_x", "binning_y", "roi"):
            setattr(info_out, field, getattr(info, field))
        self.pub_info.publish(info_out)
        self.frames_processed += 1
        self.get_logger().debug(f"projected {len(points)} points in {(time.monotonic() - t0) * 1e3:.1f} ms")

    def stop(self) -> None:
        """Nothing runs outside the executor."""


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run depth_completion_ros pointcloud_to_depth_node`."""
    from depth_completion_ros.ros.params import prepare_ros_args

    try:
        args = prepare_ros_args(args)
    except ValueError as exc:
        print(f"[FATAL] [{NODE_NAME}]: refusing to start: {exc}", file=sys.stderr)
        return 2
    return run_node(PointcloudToDepthNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
