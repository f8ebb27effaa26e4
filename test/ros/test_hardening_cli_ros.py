"""Regression tests of issue 12 (class 8) for the ROS command lines: node arguments rcl cannot parse and bag
playback options/bags, as real processes.  One clear line and exit 2, no traceback; a mixed int/float matrix
(as people write them) is accepted."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

IDENTITY_MIXED = "[1, 0.0, 0, 0.5, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]"


def test_prepare_ros_args_writes_mixed_lists_as_floats():
    from depth_completion_ros.ros.params import prepare_ros_args

    argv = ["node", "--ros-args", "-p", f"extrinsic_matrix:={IDENTITY_MIXED}", "-p", "slop:=1", "-p", "q:=[1, 2]"]
    out = prepare_ros_args(argv)
    assert out[:2] == argv[:2] and out[4:] == argv[4:]  # only the mixed list changes
    name, value = out[3].split(":=")
    assert name == "extrinsic_matrix"
    assert value.count(".") == 16 and math.isclose(float(value.strip("[]").split(",")[3]), 0.5)


@pytest.mark.parametrize(
    "rule", ["extrinsic_matrix:=[1, 'a']", "x:={a: 1}"]
)  # fmt: skip
def test_prepare_ros_args_refuses_what_rcl_cannot_parse(rule):
    from depth_completion_ros.ros.params import prepare_ros_args

    with pytest.raises(ValueError, match="Couldn't parse parameter override rule"):
        prepare_ros_args(["node", "--ros-args", "-p", rule])


def test_prepare_ros_args_missing_params_file(tmp_path):
    from depth_completion_ros.ros.params import prepare_ros_args

    with pytest.raises(ValueError, match="params file"):
        prepare_ros_args(["node", "--ros-args", "--params-file", str(tmp_path / "none.yaml")])


def test_node_starts_with_a_mixed_int_float_matrix(start_node):
    node = start_node("depth_completion_node", "-p", f"extrinsic_matrix:={IDENTITY_MIXED}")
    node.wait_for_log(r"ready: .*extrinsics from parameter extrinsic_matrix", timeout=60)
    assert node.stop() == 0
    assert "Traceback" not in node.output()


@pytest.mark.parametrize("module", ["depth_completion_node", "pointcloud_to_depth_node"])
def test_node_refuses_unparsable_arguments_in_one_line(start_node, module):
    node = start_node(module, "-p", "extrinsic_matrix:=[1, 'a', 2]")
    node.proc.wait(60)
    text = node.output()
    assert node.proc.returncode == 2, text
    assert "refusing to start" in text and "extrinsic_matrix" in text
    assert "Traceback" not in text


def _play(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "depth_completion_ros.cli", "play", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


def _unknown_type_bag(tmp_path: Path) -> Path:
    """A rosbag2 with one topic of a message type no installed package defines."""
    ts = get_typestore(Stores.ROS2_KILTED)
    ts.register(get_types_from_msg("int32 a\n", "foo_msgs/msg/Bar"))
    bag = tmp_path / "unknown"
    with Writer(bag, version=9) as writer:
        conn = writer.add_connection("/foo", "foo_msgs/msg/Bar", typestore=ts)
        writer.write(conn, 1_000, ts.serialize_cdr(ts.types["foo_msgs/msg/Bar"](a=1), "foo_msgs/msg/Bar"))
    return bag


def test_play_bag_with_only_unknown_message_types(tmp_path, ros_env):
    run = _play(ros_env, str(_unknown_type_bag(tmp_path)))
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "foo_msgs/msg/Bar" in run.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "args", [["--rate", "nan"], ["--rate", "inf"], ["--rate", "0"], ["--start-offset", "nan"], ["--clock", "-1"],
             ["--delay", "inf"]],
)  # fmt: skip
def test_play_refuses_non_finite_options(tmp_path, ros_env, args):
    run = _play(ros_env, str(_unknown_type_bag(tmp_path)), *args)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert args[0] in run.stderr.strip().splitlines()[-1]


def test_prepare_ros_args_bad_remap():
    from depth_completion_ros.ros.params import prepare_ros_args

    with pytest.raises(ValueError, match="remap rule"):
        prepare_ros_args(["node", "--ros-args", "-r", "__node:=bad-name"])
