"""depth_completion_node for a generic RGB-D camera (ToF / structured light): RGB + depth image in.

    ros2 launch depth_completion_ros tof.launch.py \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info \
        depth:=/camera/aligned_depth_to_color/image_raw \
        depth_camera_info:=/camera/aligned_depth_to_color/camera_info method:=default device:=auto num_threads:=1 \
        namespace:=''

The node runs in `namespace` (outputs `depth`, `confidence`, `camera_info`, ... relative to it, image_pipeline
style), so one instance per camera runs side by side, e.g. for two RealSense cameras:
    ros2 launch depth_completion_ros tof.launch.py namespace:=cam_left image:=/cam_left/color/image_raw ...
    ros2 launch depth_completion_ros tof.launch.py namespace:=cam_right image:=/cam_right/color/image_raw ...

Topic names of common drivers:
  - RealSense (realsense2_camera), depth aligned to colour (the defaults here):
      /camera/color/image_raw, /camera/color/camera_info,
      /camera/aligned_depth_to_color/image_raw, /camera/aligned_depth_to_color/camera_info
  - RealSense, raw depth (registered into the colour camera with tf or the extrinsic_* parameters):
      depth:=/camera/depth/image_rect_raw depth_camera_info:=/camera/depth/camera_info
  - Azure Kinect (azure_kinect_ros_driver):
      image:=/rgb/image_raw camera_info:=/rgb/camera_info
      depth:=/depth_to_rgb/image_raw depth_camera_info:=/depth_to_rgb/camera_info
Depth: 16UC1 millimetres or 32FC1 metres.  Parameters: config/tof.yaml.

Pip-only environment (no launch): the same node and config:
    .venv/bin/python -m depth_completion_ros.ros.depth_completion_node --ros-args \
        --params-file config/tof.yaml -r rgb/image:=/camera/color/image_raw \
        -r rgb/camera_info:=/camera/color/camera_info -r sensor_depth/image:=/camera/aligned_depth_to_color/image_raw \
        -r sensor_depth/camera_info:=/camera/aligned_depth_to_color/camera_info
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PACKAGE = "depth_completion_ros"

TOPIC_ARGS = {
    # launch argument: (node's relative input name, default = RealSense aligned-depth names)
    "image": ("rgb/image", "/camera/color/image_raw"),
    "camera_info": ("rgb/camera_info", "/camera/color/camera_info"),
    "depth": ("sensor_depth/image", "/camera/aligned_depth_to_color/image_raw"),
    "depth_camera_info": ("sensor_depth/camera_info", "/camera/aligned_depth_to_color/camera_info"),
}


def generate_launch_description() -> LaunchDescription:
    params_file = os.path.join(get_package_share_directory(PACKAGE), "config", "tof.yaml")
    args = [
        DeclareLaunchArgument(arg, default_value=default, description=f"topic for the node's '{name}' input")
        for arg, (name, default) in TOPIC_ARGS.items()
    ]
    args += [
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
            "namespace", default_value="", description="Namespace of the node and its outputs ('' = root)"
        ),
    ]
    node = Node(
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
        remappings=[(name, LaunchConfiguration(arg)) for arg, (name, _) in TOPIC_ARGS.items()],
    )
    return LaunchDescription([*args, node])
