"""The core stays free of ROS: no module under core/ or data/ imports rclpy or message packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "depth_completion_ros"
ROS_MODULES = {
    "rclpy",
    "sensor_msgs",
    "std_msgs",
    "geometry_msgs",
    "message_filters",
    "tf2_ros",
    "cv_bridge",
    "sensor_msgs_py",
    "builtin_interfaces",
    "diagnostic_msgs",
    "launch",
    "launch_ros",
}
PURE_DIRS = ["core", "data"]


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
            if node.module.startswith("depth_completion_ros.ros") or node.module == "depth_completion_ros.msg":
                roots.add("depth_completion_ros.ros")
        elif isinstance(node, ast.ImportFrom) and node.level > 0 and (node.module or "").startswith("ros"):
            roots.add("depth_completion_ros.ros")
    return roots


@pytest.mark.parametrize("sub", PURE_DIRS)
def test_pure_core_imports_no_ros(sub: str) -> None:
    files = sorted((PKG / sub).rglob("*.py"))
    assert files, f"no modules found under {sub}/"
    offenders = {
        str(f.relative_to(PKG)): sorted(_imported_roots(f) & (ROS_MODULES | {"depth_completion_ros.ros"}))
        for f in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"ROS imports in the pure core: {offenders}"


def test_layering_checker_detects_ros_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy\nfrom rclpy.node import Node\nfrom ..ros import conversions\n")
    assert {"rclpy", "depth_completion_ros.ros"} <= _imported_roots(bad)
