"""Replay a KITTI bag through depth_completion_node and show the result in rviz2.

    ros2 launch depth_completion_ros kitti.launch.py bag:=/path/to/kitti_bag rate:=1.0 loop:=false \
        player:=auto namespace:='' method:=default checkpoint:='' device:=auto num_threads:=1 rviz:=false

Starts a bag player when bag:= is given (topics /kitti/camera/image_raw, /kitti/camera/camera_info,
/kitti/velo/points, /tf_static): `ros2 bag play` (player:=ros2bag), this package's `bag_player`
(player:=builtin), or the first of them that is installed (player:=auto); it starts once the node is ready, so
no frame is lost to start-up. When the player ends or dies, the launch says so and shuts down.
depth_completion_node runs in `namespace` (its outputs `depth`, `camera_info`,
... are relative, image_pipeline style) with config/kitti.yaml (+ the method/checkpoint/device/num_threads overrides),
remapped to the KITTI topics. rviz2 with config/kitti.rviz when rviz:=true (RGB, sparse depth, dense depth,
confidence and the dense cloud, remapped into the namespace); skipped with a warning where rviz2 is not installed.

Pip-only environment (no launch / ros2 bag): the same processes, same config, in two shells under the same
environment (`depth_completion_ros.ros.process_env.ros_process_env()` gives a lossless local one):
    .venv/bin/python -m depth_completion_ros.ros.depth_completion_node --ros-args \
        --params-file config/kitti.yaml -p method:=default -p device:=auto -p num_threads:=1 \
        -r rgb/image:=/kitti/camera/image_raw -r rgb/camera_info:=/kitti/camera/camera_info \
        -r lidar/points:=/kitti/velo/points
    .venv/bin/python -m depth_completion_ros.ros.bag_player BAG   # rate / loop options: see its --help
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    TimerAction,
)
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.events import Shutdown
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from depth_completion_ros.ros import launch_support
from launch import LaunchContext, LaunchDescription

PACKAGE = "depth_completion_ros"

KITTI_TOPICS = {
    "rgb/image": "/kitti/camera/image_raw",
    "rgb/camera_info": "/kitti/camera/camera_info",
    "lidar/points": "/kitti/velo/points",
}


def _player_and_rviz(context: LaunchContext) -> list:
    """The bag player (its choice made here, at launch time) with its exit handler, and rviz2 when it exists."""
    log = get_logger("kitti.launch")
    actions: list = []
    bag = LaunchConfiguration("bag").perform(context)
    loop = LaunchConfiguration("loop").perform(context).lower() == "true"
    if bag:
        kind = launch_support.choose_player(LaunchConfiguration("player").perform(context))
        args = launch_support.player_arguments(kind, bag, LaunchConfiguration("rate").perform(context), loop)
        if kind == "ros2bag":
            player = ExecuteProcess(cmd=args, name="bag_play", output="screen")
        else:
            player = Node(package=PACKAGE, executable="bag_player", name="bag_player", arguments=args, output="screen")
        log.info(f"replaying {bag} with {'ros2 bag play' if kind == 'ros2bag' else 'the built-in bag_player'}")

        def _on_exit(event, _context):  # the player ended or died: say so, end the launch
            message = launch_support.player_exit_message(event.returncode, loop=loop)
            return [LogInfo(msg=message), EmitEvent(event=Shutdown(reason=message))]

        started: list[str] = []

        def _start_player(why: str) -> list:  # once: when the node is ready (or after a fallback delay)
            if started:
                return []
            started.append(why)
            return [LogInfo(msg=f"starting the bag player ({why})"), player]

        namespace = "/" + LaunchConfiguration("namespace").perform(context).strip("/")

        def _is_our_node(action) -> bool:  # this launch's depth_completion_node (two launches may run side by side)
            executable = getattr(action, "node_executable", None)
            return executable == "depth_completion_node" and action.expanded_node_namespace == namespace

        def _on_node_output(event):
            return _start_player("depth_completion_node is ready") if b"ready:" in event.text else None

        actions += [
            RegisterEventHandler(OnProcessExit(target_action=player, on_exit=_on_exit)),
            RegisterEventHandler(
                OnProcessIO(target_action=_is_our_node, on_stdout=_on_node_output, on_stderr=_on_node_output)
            ),
            TimerAction(
                period=launch_support.PLAYER_START_TIMEOUT_S,
                actions=[OpaqueFunction(function=lambda _ctx: _start_player("no ready line from the node"))],
            ),
        ]
    if LaunchConfiguration("rviz").perform(context).lower() == "true":
        if launch_support.rviz2_available():
            rviz_file = os.path.join(get_package_share_directory(PACKAGE), "config", "kitti.rviz")
            namespace = LaunchConfiguration("namespace").perform(context)
            remaps = launch_support.rviz_remappings(namespace)
            actions.append(Node(package="rviz2", executable="rviz2", arguments=["-d", rviz_file], remappings=remaps))
        else:
            log.warning(
                "rviz:=true but rviz2 is not installed here: not starting it (apt install ros-$ROS_DISTRO-rviz2)"
            )
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    params_file = os.path.join(share, "config", "kitti.yaml")

    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", default_value="", description="rosbag2 directory to replay ('' = live)"),
            DeclareLaunchArgument("rate", default_value="1.0", description="Replay rate factor"),
            DeclareLaunchArgument("loop", default_value="false", description="Replay in a loop (true/false)"),
            DeclareLaunchArgument(
                "player", default_value="auto", description="Bag player: auto | ros2bag | builtin (bag_player)"
            ),
            DeclareLaunchArgument(
                "namespace", default_value="", description="Namespace of the node and its outputs ('' = root)"
            ),
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
            DeclareLaunchArgument(
                "num_threads",
                default_value="1",
                description="Torch CPU threads (0 = one per core; published models on the CPU want them all)",
            ),
            DeclareLaunchArgument(
                "rviz", default_value="false", description="Start rviz2 (true/false; skipped when not installed)"
            ),
            Node(
                package=PACKAGE,
                executable="depth_completion_node",
                name="depth_completion_node",
                namespace=LaunchConfiguration("namespace"),
                output="screen",
                parameters=[
                    params_file,
                    {
                        "method": ParameterValue(LaunchConfiguration("method"), value_type=str),
                        "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                        "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                        "num_threads": ParameterValue(LaunchConfiguration("num_threads"), value_type=int),
                    },
                ],
                remappings=list(KITTI_TOPICS.items()),
            ),
            OpaqueFunction(function=_player_and_rviz),
        ]
    )
