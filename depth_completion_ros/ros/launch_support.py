"""Launch-time decisions shared by `launch/*.launch.py` and their pip-only twin `tools/launch.py`.

Which bag player runs (`player:=auto|ros2bag|builtin`), whether rviz2 can start, what a namespaced rviz2 is
remapped to, and what to say when the player ends. Imports neither launch nor rclpy, so it is testable anywhere.
"""

from __future__ import annotations

import importlib.util
import shutil

__all__ = [
    "NODE_OUTPUTS",
    "PLAYERS",
    "PLAYER_START_TIMEOUT_S",
    "SUBSCRIBER_WAIT_S",
    "choose_player",
    "player_arguments",
    "player_exit_message",
    "ros2bag_available",
    "rviz2_available",
    "rviz_remappings",
]

PLAYERS = ("auto", "ros2bag", "builtin")
"""`player:=` values: `auto` = `ros2 bag play` when installed, else this package's `bag_player`."""

PLAYER_START_TIMEOUT_S = 60.0
"""The bag player starts when depth_completion_node logs "ready" (no frame lost to start-up), at the latest after
this many seconds (a node started with a log level above info prints no ready line)."""

SUBSCRIBER_WAIT_S = 10.0
"""The built-in player waits up to this long for a subscriber on every replayed topic before playing."""

NODE_OUTPUTS = ("depth", "confidence", "camera_info", "sparse_depth", "depth_color", "points", "stats")
"""depth_completion_node's output topics, relative to its namespace (image_pipeline convention)."""


def ros2bag_available() -> bool:
    """True when `ros2 bag play` can run: the `ros2` command and the ros2bag verb package are installed."""
    return shutil.which("ros2") is not None and importlib.util.find_spec("ros2bag") is not None


def rviz2_available() -> bool:
    """True when the rviz2 package is installed (ament index), or an `rviz2` executable is on PATH."""
    try:
        from ament_index_python.packages import get_package_prefix

        get_package_prefix("rviz2")
        return True
    except (ImportError, LookupError, ValueError):  # PackageNotFoundError is a KeyError
        return shutil.which("rviz2") is not None


def choose_player(choice: str, *, have_ros2bag: bool | None = None) -> str:
    """`"ros2bag"` or `"builtin"` for a `player:=` value; `have_ros2bag` defaults to `ros2bag_available()`.

    Raises:
        ValueError: an unknown value, or `ros2bag` asked for where it is not installed.
    """
    choice = choice.strip().lower()
    if choice not in PLAYERS:
        raise ValueError(f"player:={choice!r} is not one of {', '.join(PLAYERS)}")
    if choice == "builtin":
        return "builtin"
    have = ros2bag_available() if have_ros2bag is None else have_ros2bag
    if choice == "ros2bag" and not have:
        raise ValueError(
            "player:=ros2bag but `ros2 bag` is not installed (apt install ros-$ROS_DISTRO-ros2bag "
            "ros-$ROS_DISTRO-rosbag2-storage-mcap); use player:=builtin or player:=auto"
        )
    return "ros2bag" if have else "builtin"


def player_arguments(kind: str, bag: str, rate: str, loop: bool) -> list[str]:
    """Command line of the player: `ros2 bag play ...` (kind "ros2bag") or the `bag_player` arguments (which
    wait up to `SUBSCRIBER_WAIT_S` for the node's subscriptions, so the first frames are not lost to discovery)."""
    args = [bag, "--rate", str(rate)] + (["--loop"] if loop else [])
    if kind == "ros2bag":
        return ["ros2", "bag", "play", *args]
    return [*args, "--wait-subscribers", str(SUBSCRIBER_WAIT_S)]


def player_exit_message(returncode: int | None, *, loop: bool) -> str:
    """What the launch says when the bag player ends (the launch then shuts down)."""
    if returncode == 0 and not loop:
        return "bag player finished the bag: ending the launch"
    return f"bag player exited with code {returncode} (see its output above): ending the launch"


def rviz_remappings(namespace: str) -> list[tuple[str, str]]:
    """Remaps of config/kitti.rviz's root topics (`/depth_color`, ...) into `namespace` ('' or '/' = none)."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return [(f"/{name}", f"{ns}/{name}") for name in NODE_OUTPUTS] if ns else []
