"""Replay a KITTI bag through depth_completion_node and show the result in rviz2.

    ros2 launch depth_completion_ros kitti.launch.py bag:=/path/to/kitti_bag rate:=1.0 loop:=false \
        method:=default checkpoint:='' device:=auto rviz:=true

Starts `ros2 bag play` (topics /kitti/camera/image_raw, /kitti/camera/camera_info, /kitti/velo/points,
/tf_static), depth_completion_node with config/kitti.yaml (+ the method/checkpoint/device overrides) remapped to
those topics, and rviz2 with config/kitti.rviz when rviz:=true (RGB, sparse depth, dense depth, confidence and
the dense cloud).

Pip-only environment (no launch / ros2 bag): the same processes, same config, in two shells under the same
environment (`depth_completion_ros.ros.process_env.ros_process_env()` gives a lossless local one):
    .venv/bin/python -m depth_completion_ros.ros.depth_completion_node --ros-args \
        --params-file config/kitti.yaml -p method:=default -p device:=auto \
        -r rgb/image:=/kitti/camera/image_raw -r rgb/camera_info:=/kitti/camera/camera_info \
        -r lidar/points:=/kitti/velo/points
    .venv/bin/python -m depth_completion_ros.ros.bag_player BAG   # rate / loop options: see its --help
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PACKAGE = "depth_completion_ros"

KITTI_TOPICS = {
    "rgb/image": "/kitti/camera/image_raw",
    "rgb/camera_info": "/kitti/camera/camera_info",
    "lidar/points": "/kitti/velo/points",
}


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    params_file = os.path.join(share, "config", "kitti.yaml")
    rviz_file = os.path.join(share, "config", "kitti.rviz")

    bag = LaunchConfiguration("bag")
    rate = LaunchConfiguration("rate")
    loop = LaunchConfiguration("loop")
    have_bag = PythonExpression(["'", bag, "' != ''"])
    play = ["ros2", "bag", "play", bag, "--rate", rate]

    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", default_value="", description="rosbag2 directory to replay ('' = live)"),
            DeclareLaunchArgument("rate", default_value="1.0", description="Replay rate factor"),
            DeclareLaunchArgument("loop", default_value="false", description="Replay in a loop (true/false)"),
            DeclareLaunchArgument(
                "method",
                default_value="default",
                description="Completion method: default | cspn | penet | enet | cspn-nyu",
            ),
            DeclareLaunchArgument(
                "checkpoint",
                default_value="",
                description="safetensors checkpoint (cspn: from train; penet / enet / cspn-nyu: from import-weights)",
            ),
            DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda"),
            DeclareLaunchArgument("rviz", default_value="true", description="Start rviz2 (true/false)"),
            ExecuteProcess(
                cmd=[*play, "--loop"],
                name="bag_play",
                output="screen",
                condition=IfCondition(PythonExpression([have_bag, " and '", loop, "'.lower() == 'true'"])),
            ),
            ExecuteProcess(
                cmd=play,
                name="bag_play",
                output="screen",
                condition=IfCondition(PythonExpression([have_bag, " and '", loop, "'.lower() != 'true'"])),
            ),
            Node(
                package=PACKAGE,
                executable="depth_completion_node",
                name="depth_completion_node",
                output="screen",
                parameters=[
                    params_file,
                    {
                        "method": ParameterValue(LaunchConfiguration("method"), value_type=str),
                        "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                        "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                    },
                ],
                remappings=list(KITTI_TOPICS.items()),
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", rviz_file],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
