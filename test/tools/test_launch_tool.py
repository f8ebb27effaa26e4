"""`depth-completion launch` starts what the launch files start: same executable, config, remaps and defaults."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from depth_completion_ros.cli import main
from depth_completion_ros.tools.launch import launch_file_defaults, plan

LAUNCH = Path(__file__).resolve().parents[2] / "launch"


def _declared(name: str) -> set[str]:
    tree = ast.parse((LAUNCH / f"{name}.launch.py").read_text())
    return {
        n.args[0].value
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "DeclareLaunchArgument" and n.args
        if isinstance(n.args[0], ast.Constant)
    }


def test_kitti_plan_matches_launch_file() -> None:
    values = launch_file_defaults("kitti")
    assert set(values) == _declared("kitti")  # the exact set is pinned in test/launch/test_launch_files.py
    assert values["rate"] == "1.0" and values["method"] == "default" and values["num_threads"] == "1"
    assert values["rviz"] == "false" and values["player"] == "auto" and values["namespace"] == ""
    values.update(
        bag="/data/kitti_bag", loop="true", player="builtin", method="cspn", checkpoint="/m.safetensors", namespace=""
    )
    procs = dict(plan("kitti", values))
    node = procs["depth_completion_node"]
    assert node[1:3] == ["-m", "depth_completion_ros.ros.depth_completion_node"]
    assert node[node.index("--params-file") + 1].endswith("config/kitti.yaml")
    assert "method:=cspn" in node and "checkpoint:=/m.safetensors" in node
    assert "num_threads:=1" in node
    values.update(method="cspn-nyu", checkpoint="/w/cspn_nyu.safetensors", device="cuda", num_threads="0")
    node = dict(plan("kitti", values))["depth_completion_node"]
    assert "method:=cspn-nyu" in node and "checkpoint:=/w/cspn_nyu.safetensors" in node and "device:=cuda" in node
    assert "num_threads:=0" in node
    remaps = {node[i + 1] for i, a in enumerate(node) if a == "-r"}
    assert remaps == {
        "rgb/image:=/kitti/camera/image_raw",
        "rgb/camera_info:=/kitti/camera/camera_info",
        "lidar/points:=/kitti/velo/points",
    }
    assert procs["bag_play"][-6:] == ["/data/kitti_bag", "--rate", "1.0", "--loop", "--wait-subscribers", "10.0"]
    assert "rviz2" not in procs


def test_tof_plan_uses_topic_arguments() -> None:
    values = launch_file_defaults("tof")
    assert set(values) == _declared("tof") | {"image", "camera_info", "depth", "depth_camera_info"}
    values["depth"] = "/my/depth"
    node = dict(plan("tof", values))["depth_completion_node"]
    assert "sensor_depth/image:=/my/depth" in node
    assert not any(a.startswith("__ns:=") for a in node)
    values["namespace"] = "cam_left"
    node = dict(plan("tof", values))["depth_completion_node"]
    assert node[node.index("__ns:=/cam_left") - 1] == "-r"
    assert node[node.index("--params-file") + 1].endswith("config/tof.yaml")


def test_unknown_argument_is_exit_2(capsys) -> None:
    assert main(["launch", "kitti", "nope:=1", "--print"]) == 2
    assert "unknown argument" in capsys.readouterr().err


@pytest.mark.ros
def test_pip_only_launch_ends_when_the_player_dies(tmp_path) -> None:
    """As kitti.launch.py: the built-in player starts once the node is ready; when it dies, everything stops."""
    from depth_completion_ros.ros.process_env import random_domain_id, ros_process_env

    env = ros_process_env(random_domain_id(), ros_home=str(tmp_path / "ros_home"))
    cmd = [sys.executable, "-m", "depth_completion_ros.cli", "launch", "kitti", f"bag:={tmp_path}/x", "device:=cpu"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    ready, started = out.index("ready: input_type=pointcloud"), out.index("[launch] starting the bag player")
    assert ready < started < out.index("[launch] bag player exited with code 2")
