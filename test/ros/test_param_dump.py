"""`ros2 param dump` output loads back: dump a running node, start a new one from the dump, same parameters.

With the upstream ros2cli installed the real `ros2 param dump` is used too; the emulation writes the same YAML
(parameter_value_to_python values under `<node>: ros__parameters:`, yaml.dump block style), so unset array
parameters appear as `null` in both.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[2]
FQN = "/depth_completion_node"


def _call(peer, srv_type, name: str, request):
    client = peer.node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=10.0), name
    future = client.call_async(request)
    deadline = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert future.done(), f"{name} did not answer"
    return future.result()


def _parameters(peer) -> dict:
    from rcl_interfaces.srv import GetParameters, ListParameters
    from rclpy.parameter import parameter_value_to_python

    names = sorted(_call(peer, ListParameters, f"{FQN}/list_parameters", ListParameters.Request()).result.names)
    values = _call(peer, GetParameters, f"{FQN}/get_parameters", GetParameters.Request(names=names)).values
    return {n: parameter_value_to_python(v) for n, v in zip(names, values, strict=True)}


def _dump(peer, env: dict[str, str], real: bool) -> str:
    if real:
        run = subprocess.run(
            ["ros2", "param", "dump", FQN, "--no-daemon", "--spin-time", "5"],  # discovery on a busy machine
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout
    import yaml

    return yaml.dump({FQN: {"ros__parameters": _parameters(peer)}}, default_flow_style=False)


@pytest.mark.parametrize("real", [False, True], ids=["emulated_dump", "ros2_param_dump"])
def test_dump_loads_back_with_the_same_parameters(real, start_node, ros_peer, ros_env, tmp_path) -> None:
    if real and (shutil.which("ros2") is None or importlib.util.find_spec("ros2param") is None):
        pytest.skip("ros2cli (ros2 param) is not installed")
    first = start_node("depth_completion_node", params_file=REPO / "config" / "kitti.yaml", params={"device": "cpu"})
    first.wait_for_log(r"ready: input_type=pointcloud", timeout=40)
    before = _parameters(ros_peer)
    assert before["extrinsic_matrix"] is None  # unset array parameters are part of the dump
    dumped = _dump(ros_peer, ros_env, real)
    assert "extrinsic_matrix: null" in dumped
    dump_file = tmp_path / "dump.yaml"
    dump_file.write_text(dumped)
    first.stop()

    second = start_node("depth_completion_node", params_file=dump_file)
    second.wait_for_log(r"ready: input_type=pointcloud", timeout=40)  # fails on "refusing to start"
    assert _parameters(ros_peer) == before
    assert _dump(ros_peer, ros_env, real) == dumped
