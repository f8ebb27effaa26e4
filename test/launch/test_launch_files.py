"""Launch files: always checked statically (valid Python, arguments, config files exist, KITTI remaps);
generated with the real launch / launch_ros API when importable (skipped cleanly otherwise)."""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
CONFIG = REPO / "config"

EXPECTED_ARGS = {
    "kitti.launch.py": {"bag", "rate", "loop", "player", "namespace", "method", "checkpoint", "device", "rviz"},
    "tof.launch.py": {
        "image",
        "camera_info",
        "depth",
        "depth_camera_info",
        "method",
        "checkpoint",
        "device",
        "namespace",
    },
}
EXPECTED_CONFIG = {"kitti.launch.py": {"kitti.yaml", "kitti.rviz"}, "tof.launch.py": {"tof.yaml"}}
KITTI_BAG_TOPICS = {"/kitti/camera/image_raw", "/kitti/camera/camera_info", "/kitti/velo/points"}


def _tree(name: str) -> ast.Module:
    return ast.parse((LAUNCH / name).read_text(), filename=name)


def _string_constants(tree: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _declared_args(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant):
                names.add(first.value)
    return names


@pytest.mark.parametrize("name", sorted(EXPECTED_ARGS))
def test_launch_file_is_valid_python_with_entry_point(name):
    tree = _tree(name)
    compile(tree, name, "exec")
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFIG))
def test_launch_file_references_existing_config(name):
    strings = _string_constants(_tree(name))
    referenced = {s for s in strings if s.endswith((".yaml", ".rviz"))}
    assert referenced == EXPECTED_CONFIG[name]
    for cfg in referenced:
        assert (CONFIG / cfg).is_file(), cfg
    # the installed share dir gets config/ and launch/ (CMakeLists.txt / setup.py data_files)
    assert "config" in strings


def test_kitti_launch_args_and_remaps_static():
    tree = _tree("kitti.launch.py")
    assert _declared_args(tree) == EXPECTED_ARGS["kitti.launch.py"]
    assert _string_constants(tree) >= KITTI_BAG_TOPICS


def test_tof_launch_documents_driver_topics():
    text = (LAUNCH / "tof.launch.py").read_text() + (CONFIG / "tof.yaml").read_text()
    for topic in (
        "/camera/color/image_raw",
        "/camera/aligned_depth_to_color/image_raw",
        "/camera/depth/image_rect_raw",
        "/rgb/image_raw",
        "/depth_to_rgb/image_raw",
    ):
        assert topic in text, topic


def test_rviz_config_shows_the_outputs():
    rviz = yaml.safe_load((CONFIG / "kitti.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    assert {"/kitti/camera/image_raw", "/sparse_depth", "/depth_color", "/confidence", "/points"} <= topics
    classes = {d["Class"] for d in displays}
    assert {"rviz_default_plugins/Image", "rviz_default_plugins/PointCloud2"} <= classes


def _load_launch_module(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(EXPECTED_ARGS))
def test_generate_launch_description(name, tmp_path, monkeypatch):
    launch = pytest.importorskip("launch")
    if not hasattr(launch, "LaunchDescription"):  # the repo's own launch/ folder seen as a namespace package
        pytest.skip("the launch package is not installed")
    pytest.importorskip("launch_ros")
    # an ament index that knows this package, so get_package_share_directory works without an install
    index = tmp_path / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "depth_completion_ros").write_text("")
    (tmp_path / "share" / "depth_completion_ros").mkdir()
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(tmp_path), os.environ.get("AMENT_PREFIX_PATH", "")]))
    ld = _load_launch_module(name).generate_launch_description()
    assert isinstance(ld, launch.LaunchDescription)
    args = {a.name for a in ld.get_launch_arguments()}
    assert args == EXPECTED_ARGS[name]

    from launch_ros.actions import Node

    nodes = [e for e in ld.entities if isinstance(e, Node)]
    completion = [n for n in nodes if n.node_executable == "depth_completion_node"]
    assert len(completion) == 1
    context = launch.LaunchContext()
    for action in ld.get_launch_arguments():
        action.visit(context)
    if name == "kitti.launch.py":
        context.launch_configurations["bag"] = "/tmp/bag"
        context.launch_configurations["rviz"] = "false"
        plays = [e for e in ld.entities if isinstance(e, launch.actions.ExecuteProcess) and not isinstance(e, Node)]
        active = [p for p in plays if p.condition is None or p.condition.evaluate(context)]
        assert len(active) == 1  # loop false -> exactly the non-looping player
        rviz = [n for n in nodes if n.node_package == "rviz2"]
        assert len(rviz) == 1
        assert not rviz[0].condition.evaluate(context)


def test_launch_service_starts_the_node(tmp_path):
    """Run kitti.launch.py with the real LaunchService (no bag, no rviz): the node starts with the remaps."""
    launch = pytest.importorskip("launch")
    if not hasattr(launch, "LaunchService"):
        pytest.skip("the launch package is not installed")
    pytest.importorskip("launch_ros")
    import subprocess
    import sys

    from depth_completion_ros.ros.process_env import ros_process_env

    script = tmp_path / "run_launch.py"
    script.write_text(
        "import sys, threading, time\n"
        "from launch import LaunchDescription, LaunchService\n"
        "from launch.actions import IncludeLaunchDescription\n"
        "from launch.launch_description_sources import PythonLaunchDescriptionSource\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        "path = get_package_share_directory('depth_completion_ros') + '/launch/kitti.launch.py'\n"
        "ls = LaunchService(argv=[])\n"
        "args = {'rviz': 'false', 'bag': '', 'device': 'cpu'}.items()\n"
        "ls.include_launch_description(LaunchDescription([IncludeLaunchDescription("
        "PythonLaunchDescriptionSource(path), launch_arguments=args)]))\n"
        "threading.Thread(target=lambda: (time.sleep(12), ls.shutdown()), daemon=True).start()\n"
        "sys.exit(ls.run())\n"
    )
    env = ros_process_env(ros_home=str(tmp_path / "ros_home"))
    run = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "ready: input_type=pointcloud" in out, out[-3000:]
    assert "/kitti/camera/image_raw, /kitti/camera/camera_info, /kitti/velo/points" in out
    assert "process has finished cleanly" in out
