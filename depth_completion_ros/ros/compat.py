"""Guarded imports of the optional upstream ROS 2 Python libraries, in one place.

Each name is the upstream object when its package is importable and `None` otherwise.  The PyPI-only
setup has none of them; a ROS 2 distribution (Jazzy / Kilted) has all of them.  Callers test for `None`
and fall back to the package's own equivalent (e.g. `depth_completion_ros.ros.conversions`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = [
    "CvBridge",
    "available",
    "message_filters",
    "point_cloud2",
    "tf2_ros",
]


def _optional_module(name: str) -> ModuleType | None:
    """`importlib.import_module(name)`, or None when the module (or one it needs) is missing or broken."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, but also broken native builds (OSError, AttributeError, ...)
        return None


point_cloud2: ModuleType | None = _optional_module("sensor_msgs_py.point_cloud2")
"""`sensor_msgs_py.point_cloud2` (read_points, read_points_numpy, create_cloud, ...) or None."""

message_filters: ModuleType | None = _optional_module("message_filters")
"""`message_filters` (Subscriber, ApproximateTimeSynchronizer, ...) or None."""

tf2_ros: ModuleType | None = _optional_module("tf2_ros")
"""`tf2_ros` (Buffer, TransformListener, ...) or None."""

_cv_bridge = _optional_module("cv_bridge")
# The PyPI "cv-bridge" 1.13 is ROS 1 code that breaks under numpy 2; only accept a ROS 2 build, which has
# `cv_bridge.CvBridge` *and* its compiled `cv_bridge.boost` part.
CvBridge: Any = (
    getattr(_cv_bridge, "CvBridge", None)
    if _cv_bridge is not None and _optional_module("cv_bridge.boost.cv_bridge_boost") is not None
    else None
)
"""`cv_bridge.CvBridge` (the ROS 2 build) or None."""


def available() -> dict[str, bool]:
    """Which optional upstream libraries are importable, by package name."""
    return {
        "sensor_msgs_py": point_cloud2 is not None,
        "cv_bridge": CvBridge is not None,
        "message_filters": message_filters is not None,
        "tf2_ros": tf2_ros is not None,
    }
