"""Python packaging for depth_completion_ros.

Colcon builds this package as ament_cmake (CMakeLists.txt, because of msg/); this file serves the
pip-only environment (scripts/setup.sh) and gives the command-line tools as console scripts.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "depth_completion_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["py.typed", "core/published/manifests/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "numba", "opencv-python-headless", "torch", "safetensors", "rosbags", "pyyaml"],
    zip_safe=False,
    maintainer="depth_completion_ros developers",
    description="Dense depth from sparse LiDAR/ToF depth and RGB for ROS 2 (CSPN).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "depth-completion = depth_completion_ros.cli:main",
            "depth_completion_node = depth_completion_ros.ros.depth_completion_node:main",
            "pointcloud_to_depth_node = depth_completion_ros.ros.pointcloud_to_depth_node:main",
            "bag_player = depth_completion_ros.ros.bag_player:main",
        ],
    },
)
