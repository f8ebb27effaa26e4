"""Parameter schemas, YAML configs and their mapping to config dataclasses."""

from __future__ import annotations

from pathlib import Path

import pytest

from depth_completion_ros.ros.params import (
    DEPTH_COMPLETION_PARAMS,
    DYNAMIC_PARAMS,
    POINTCLOUD_TO_DEPTH_PARAMS,
    declare_parameters,
    depth_completion_config,
    load_params_file,
    pointcloud_to_depth_config,
    read_parameters,
    updated_config,
)

REPO = Path(__file__).resolve().parents[2]
IDENTITY16 = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize(("name", "input_type"), [("kitti.yaml", "pointcloud"), ("tof.yaml", "depth")])
def test_config_files_are_valid(name, input_type):
    values = load_params_file(REPO / "config" / name, "depth_completion_node")
    spec_names = {s.name for s in DEPTH_COMPLETION_PARAMS}
    assert set(values) <= spec_names
    # the files cover topics, sync, method, device, iterations, depth range, extrinsics and outputs
    for key in ("queue_size", "slop", "method", "device", "iterations", "max_depth", "use_tf", "publish_points"):
        assert key in values, key
    cfg = depth_completion_config(values)
    assert cfg.input_type == input_type
    assert cfg.sync.queue_size == values["queue_size"]
    assert cfg.sync.slop == values["slop"]
    assert cfg.completer.max_depth == values["max_depth"]
    assert cfg.completer.iterations == values["iterations"]
    assert cfg.completer.bands == values["bands"]
    assert cfg.completer.outlier_tolerance == values["outlier_tolerance"]
    assert cfg.outputs.publish_points == values["publish_points"]


def test_completer_tuning_parameters():
    cfg = depth_completion_config({"bands": 3, "outlier_tolerance": 0.0})
    assert (cfg.completer.bands, cfg.completer.outlier_tolerance) == (3, 0.0)
    for name, bad in (("bands", 0), ("outlier_tolerance", -0.1)):
        with pytest.raises(ValueError, match=f"invalid parameter '{name}'"):
            depth_completion_config({name: bad})


def test_defaults_map_to_config():
    cfg = depth_completion_config({})
    assert cfg.input_type == "pointcloud"
    assert (cfg.image_topic, cfg.camera_info_topic, cfg.points_topic) == (
        "rgb/image",
        "rgb/camera_info",
        "lidar/points",
    )
    assert cfg.completer.method == "default"
    assert cfg.completer.checkpoint is None
    assert cfg.qos.reliability == "best_effort"
    assert cfg.extrinsics.use_tf
    assert not cfg.extrinsics.from_parameters


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("input_type", "lidar"),
        ("method", "magic"),
        ("device", "tpu"),
        ("queue_size", 0),
        ("queue_size", 2.5),
        ("slop", -0.1),
        ("slop", float("nan")),
        ("iterations", -1),
        ("max_depth", 0.0),
        ("min_depth", 150.0),  # >= max_depth default 100
        ("points_decimation", 0),
        ("qos_reliability", "sometimes"),
        ("qos_depth", 0),
        ("publish_points", "yes"),
        ("checkpoint", "/nonexistent/model.safetensors"),
        ("extrinsic_matrix", [1.0, 2.0, 3.0]),
        ("extrinsic_matrix", [2.0, *IDENTITY16[1:]]),  # not a rotation
        ("extrinsic_matrix", [*IDENTITY16[:12], 1.0, 0.0, 0.0, 1.0]),  # bad last row
        ("extrinsic_xyz", [0.0, 0.0]),
        ("kitti_calib_dir", "/nonexistent/calib"),
        ("unknown_param", 1),
    ],
)
def test_invalid_value_names_the_parameter(name, value):
    values = {name: value}
    if name == "extrinsic_xyz":
        values["extrinsic_quat_xyzw"] = [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match=f"invalid parameter '{name}'"):
        depth_completion_config(values)


def test_cspn_needs_checkpoint():
    with pytest.raises(ValueError, match="invalid parameter 'checkpoint'"):
        depth_completion_config({"method": "cspn"})


@pytest.mark.parametrize("method", ["penet", "enet", "cspn-nyu"])
def test_published_methods(method, tmp_path):
    with pytest.raises(ValueError, match=rf"invalid parameter 'checkpoint'.*import-weights --format {method}"):
        depth_completion_config({"method": method})
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"x")  # the node's completer checks the contents; the parameters check that it exists
    cfg = depth_completion_config({"method": method, "checkpoint": str(ckpt), "fp16": True, "device": "cuda"})
    assert cfg.completer.method == method
    assert cfg.completer.checkpoint == str(ckpt)
    assert cfg.completer.fp16 is True and cfg.completer.device == "cuda"
    assert depth_completion_config({"method": method, "checkpoint": str(ckpt)}).completer.fp16 is False


def test_xyz_and_quaternion_must_come_together():
    with pytest.raises(ValueError, match="extrinsic_quat_xyzw"):
        depth_completion_config({"extrinsic_xyz": [0.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="not a unit quaternion"):
        depth_completion_config({"extrinsic_xyz": [0.0, 0.0, 0.0], "extrinsic_quat_xyzw": [0.0, 0.0, 0.0, 3.0]})
    with pytest.raises(ValueError, match="either"):
        depth_completion_config(
            {
                "extrinsic_matrix": IDENTITY16,
                "extrinsic_xyz": [0.0, 0.0, 0.0],
                "extrinsic_quat_xyzw": [0.0, 0.0, 0.0, 1.0],
            }
        )


def test_extrinsics_from_parameters():
    cfg = depth_completion_config({"extrinsic_matrix": [int(v) for v in IDENTITY16]})  # ints from YAML accepted
    assert cfg.extrinsics.matrix == tuple(IDENTITY16)
    assert cfg.extrinsics.from_parameters
    cfg = depth_completion_config({"extrinsic_xyz": [1, 2, 3], "extrinsic_quat_xyzw": [0.0, 0.0, 0.0, 1.0]})
    assert cfg.extrinsics.xyz == (1.0, 2.0, 3.0)


def test_kitti_calib_dir_accepted_when_files_exist(tmp_path):
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt"):
        (tmp_path / name).write_text("")
    cfg = depth_completion_config({"kitti_calib_dir": str(tmp_path)})
    assert cfg.extrinsics.kitti_calib_dir == str(tmp_path)


def test_runtime_updates():
    cfg = depth_completion_config({})
    before = cfg.completer.iterations
    assert before != 3
    new = updated_config(cfg, {"iterations": 3, "max_depth": 20.0, "publish_points": True, "points_decimation": 2})
    assert new.completer.iterations == 3
    assert new.completer.max_depth == 20.0
    assert new.outputs.publish_points is True
    assert new.outputs.points_decimation == 2
    assert cfg.completer.iterations == before  # the old config is unchanged (frozen)
    with pytest.raises(ValueError, match=r"invalid parameter 'method'.*read-only"):
        updated_config(cfg, {"method": "cspn"})
    with pytest.raises(ValueError, match="invalid parameter 'iterations'"):
        updated_config(cfg, {"iterations": -2})
    with pytest.raises(ValueError, match="invalid parameter 'max_depth'"):
        updated_config(cfg, {"max_depth": 0.05})  # below min_depth 0.1


def test_dynamic_set_is_the_safe_one():
    assert {"iterations", "max_depth", "publish_points", "points_decimation", "publish_color", "publish_sparse"} <= (
        DYNAMIC_PARAMS
    )
    for unsafe in ("method", "checkpoint", "device", "input_type", "queue_size", "slop", "extrinsic_matrix"):
        assert unsafe not in DYNAMIC_PARAMS


def test_pointcloud_to_depth_config():
    cfg = pointcloud_to_depth_config({"max_depth": 50.0, "slop": 0.02})
    assert cfg.max_depth == 50.0
    assert cfg.sync.slop == 0.02
    with pytest.raises(ValueError, match="invalid parameter 'method'"):
        pointcloud_to_depth_config({"method": "default"})


def test_declared_with_descriptors_and_ranges():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "iterations:=5", "-p", "extrinsic_xyz:=[1, 2, 3]"])
    try:
        node = rclpy.create_node("params_test", context=context)
        declare_parameters(node, DEPTH_COMPLETION_PARAMS)
        values = read_parameters(node, DEPTH_COMPLETION_PARAMS)
        assert values["iterations"] == 5
        assert values["extrinsic_xyz"] == [1, 2, 3]
        assert values["extrinsic_matrix"] is None
        desc = node.describe_parameter("slop")
        assert desc.description
        assert desc.read_only
        assert desc.floating_point_range[0].from_value == 0.0
        it = node.describe_parameter("iterations")
        assert not it.read_only
        assert it.integer_range[0].to_value == 256
        # read-only and out-of-range changes are refused by rclpy
        assert not node.set_parameters([Parameter("slop", value=0.2)])[0].successful
        assert not node.set_parameters([Parameter("iterations", value=1000)])[0].successful
        assert node.set_parameters([Parameter("iterations", value=4)])[0].successful
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_out_of_range_override_refused_at_declaration():
    rclpy = pytest.importorskip("rclpy")
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "slop:=50.0"])
    try:
        node = rclpy.create_node("params_test_bad", context=context)
        with pytest.raises(Exception, match="slop"):
            declare_parameters(node, POINTCLOUD_TO_DEPTH_PARAMS)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
