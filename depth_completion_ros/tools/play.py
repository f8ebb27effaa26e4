"""`depth-completion play`: replay a rosbag2 / ROS 1 bag onto live topics (see `ros/bag_player.py`)."""

from __future__ import annotations

import argparse

from depth_completion_ros.ros import bag_player

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Same options as the `bag_player` executable."""
    bag_player.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Play the bag."""
    return bag_player.run(args)
