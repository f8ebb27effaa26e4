"""depth_completion_ros: dense depth from sparse depth and RGB, as ROS 2 nodes around a pure core.

`depth_completion_ros.core` (numpy/torch only) holds the geometry, completion and metrics;
`depth_completion_ros.ros` is the thin rclpy shell.  The generated messages (`depth_completion_ros.msg`)
may live in another `depth_completion_ros` directory on sys.path (the pip-only setup installs them into
the virtual environment), so this package extends its path to find them.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
