"""Parameter schemas of the nodes and their mapping to config dataclasses (one function per node).

The schemas (`DEPTH_COMPLETION_PARAMS`, `POINTCLOUD_TO_DEPTH_PARAMS`) are plain data; `declare_parameters`
turns them into rclpy declarations with `ParameterDescriptor` (description, ranges, read-only), and
`depth_completion_config` / `pointcloud_to_depth_config` validate a name → value mapping into frozen configs,
raising `ValueError` that names the parameter.  Only the mapping functions run without rclpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from depth_completion_ros.core.completer import CompleterConfig

__all__ = [
    "DEPTH_COMPLETION_PARAMS",
    "DYNAMIC_PARAMS",
    "METHODS",
    "POINTCLOUD_TO_DEPTH_PARAMS",
    "PUBLISHED_METHODS",
    "DepthCompletionNodeConfig",
    "DeskewConfig",
    "ExtrinsicsConfig",
    "OutputConfig",
    "ParamSpec",
    "PointcloudToDepthNodeConfig",
    "QosConfig",
    "SyncConfig",
    "declare_parameters",
    "depth_completion_config",
    "load_params_file",
    "pointcloud_to_depth_config",
    "prepare_ros_args",
    "read_parameters",
    "updated_config",
]


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """One parameter: name, default (None = unset array), description, range, choices, dynamic or read-only."""

    name: str
    default: Any
    description: str
    kind: str  # "bool" | "int" | "float" | "str" | "float_array"
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    dynamic: bool = False


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    """Approximate-time sync: messages kept per input, max stamp spread in seconds."""

    queue_size: int = 10
    slop: float = 0.05


@dataclass(frozen=True, kw_only=True)
class QosConfig:
    """Input QoS: reliability ("best_effort" = sensor data, or "reliable") and history depth."""

    reliability: str = "best_effort"
    depth: int = 5


@dataclass(frozen=True, kw_only=True)
class ExtrinsicsConfig:
    """Where `T_camera_from_source` (4×4, source → camera optical frame, metres) comes from.

    Parameters win when set (`matrix`, or `xyz` + `quat_xyzw`), then `kitti_calib_dir`, then tf2 (`use_tf`).
    """

    matrix: tuple[float, ...] | None = None  # 16 floats, row-major
    xyz: tuple[float, float, float] | None = None
    quat_xyzw: tuple[float, float, float, float] | None = None
    kitti_calib_dir: str = ""
    kitti_camera_index: int = 2
    use_tf: bool = True
    tf_timeout_s: float = 0.0

    @property
    def from_parameters(self) -> bool:
        """True when an explicit matrix or xyz+quaternion is set."""
        return self.matrix is not None or self.xyz is not None


@dataclass(frozen=True, kw_only=True)
class DeskewConfig:
    """LiDAR motion compensation between decode and projection (see `ros/deskew.py`).

    `mode`: "off", "auto" (compensate when ego motion is available, else pass through with one warning) or
    "on" (a frame without ego motion is skipped with a throttled error).  `motion_source`: "tf"
    (`odom_frame` -> the cloud's frame, interpolated), "twist" (geometry_msgs/TwistStamped), "odometry"
    (nav_msgs/Odometry), "imu" (sensor_msgs/Imu angular rate, rotation only) on `motion_topic`, or "none".
    Point times: a per-point time field when the cloud has one (`time_unit` "auto" detects the unit), else the
    azimuth model (`scan_period` s per revolution, 0 = the whole cloud at its stamp; `clockwise` seen from above).
    """

    mode: str = "auto"
    motion_source: str = "tf"
    odom_frame: str = "odom"
    motion_topic: str = "ego_motion"
    scan_period: float = 0.1
    clockwise: bool = True
    time_unit: str = "auto"


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """Optional outputs (changeable at run time); each is built and published only while it has a subscriber."""

    publish_points: bool = False
    points_decimation: int = 4
    publish_color: bool = True
    publish_sparse: bool = True


@dataclass(frozen=True, kw_only=True)
class DepthCompletionNodeConfig:
    """Everything `depth_completion_node` reads from its parameters."""

    input_type: str = "pointcloud"  # "pointcloud" | "depth"
    image_topic: str = "rgb/image"
    camera_info_topic: str = "rgb/camera_info"
    points_topic: str = "lidar/points"
    depth_topic: str = "sensor_depth/image"
    depth_camera_info_topic: str = "sensor_depth/camera_info"
    rectified: bool = True
    min_depth: float = 0.1
    completer: CompleterConfig = field(default_factory=CompleterConfig)
    sync: SyncConfig = SyncConfig()
    qos: QosConfig = QosConfig()
    extrinsics: ExtrinsicsConfig = ExtrinsicsConfig()
    deskew: DeskewConfig = DeskewConfig()
    outputs: OutputConfig = OutputConfig()
    input_timeout_s: float = 5.0
    debug_delay_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class PointcloudToDepthNodeConfig:
    """Everything `pointcloud_to_depth_node` reads from its parameters."""

    camera_info_topic: str = "rgb/camera_info"
    points_topic: str = "lidar/points"
    rectified: bool = True
    min_depth: float = 0.1
    max_depth: float = 1000.0
    sync: SyncConfig = SyncConfig()
    qos: QosConfig = QosConfig()
    extrinsics: ExtrinsicsConfig = ExtrinsicsConfig()
    deskew: DeskewConfig = DeskewConfig()


PUBLISHED_METHODS = ("penet", "enet", "cspn-nyu")
"""The published models (`core/published/`); their checkpoints come from `depth-completion import-weights`."""
METHODS = ("default", "cspn", *PUBLISHED_METHODS)

_DESKEW: tuple[ParamSpec, ...] = (
    ParamSpec(
        name="deskew",
        default="auto",
        kind="str",
        choices=("off", "auto", "on"),
        description="LiDAR motion compensation: auto = when ego motion is available (else one warning), "
        "on = required (frames without ego motion are skipped)",
    ),
    ParamSpec(
        name="deskew_motion_source",
        default="tf",
        kind="str",
        choices=("tf", "twist", "odometry", "imu", "none"),
        description="Ego motion: tf odom_frame -> cloud frame, a TwistStamped / Odometry topic, Imu angular rate "
        "(rotation only), or none",
    ),
    ParamSpec(name="odom_frame", default="odom", kind="str", description="Fixed frame of the tf ego motion"),
    ParamSpec(
        name="deskew_motion_topic",
        default="ego_motion",
        kind="str",
        description="TwistStamped / Odometry / Imu topic (deskew_motion_source twist, odometry, imu)",
    ),
    ParamSpec(
        name="deskew_scan_period",
        default=0.1,
        kind="float",
        low=0.0,
        high=10.0,
        description="Azimuth model (clouds without a time field): s per revolution, header stamp = facing +x; "
        "0 = every point at the stamp",
    ),
    ParamSpec(
        name="deskew_clockwise",
        default=True,
        kind="bool",
        description="Azimuth model: the LiDAR spins clockwise seen from above (Velodyne, Ouster, Hesai)",
    ),
    ParamSpec(
        name="deskew_time_unit",
        default="auto",
        kind="str",
        choices=("auto", "s", "ms", "us", "ns"),
        description="Unit of the per-point time field (t, time, timestamp, time_offset, offset_time, "
        "time_sec+time_nsec); auto detects it",
    ),
)

_COMMON: tuple[ParamSpec, ...] = (
    ParamSpec(name="camera_info_topic", default="rgb/camera_info", kind="str", description="RGB CameraInfo topic"),
    ParamSpec(name="points_topic", default="lidar/points", kind="str", description="PointCloud2 input (pointcloud)"),
    ParamSpec(
        name="rectified",
        default=True,
        kind="bool",
        description="Camera images are rectified: project with P (true) or with K + D (false)",
    ),
    ParamSpec(name="queue_size", default=10, kind="int", low=1, high=1000, description="Sync queue per input"),
    ParamSpec(name="slop", default=0.05, kind="float", low=0.0, high=10.0, description="Sync max stamp spread, s"),
    ParamSpec(
        name="qos_reliability",
        default="best_effort",
        kind="str",
        choices=("best_effort", "reliable"),
        description="Input QoS reliability (best_effort = sensor data profile)",
    ),
    ParamSpec(name="qos_depth", default=5, kind="int", low=1, high=1000, description="Input QoS history depth"),
    ParamSpec(
        name="min_depth", default=0.1, kind="float", low=0.0, high=1000.0, description="Closer points ignored, m"
    ),
    ParamSpec(
        name="extrinsic_matrix",
        default=None,
        kind="float_array",
        description="T_camera_from_source, 16 floats row-major (wins over tf and kitti_calib_dir)",
    ),
    ParamSpec(name="extrinsic_xyz", default=None, kind="float_array", description="Translation source->camera, m (3)"),
    ParamSpec(
        name="extrinsic_quat_xyzw",
        default=None,
        kind="float_array",
        description="Rotation source->camera, quaternion x y z w (4), with extrinsic_xyz",
    ),
    ParamSpec(
        name="kitti_calib_dir",
        default="",
        kind="str",
        description="KITTI raw calibration dir (calib_cam_to_cam.txt, calib_velo_to_cam.txt)",
    ),
    ParamSpec(name="kitti_camera_index", default=2, kind="int", low=0, high=3, description="KITTI camera (2 = left)"),
    ParamSpec(name="use_tf", default=True, kind="bool", description="Look extrinsics up in tf when not set above"),
    *_DESKEW,
)

DEPTH_COMPLETION_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        name="input_type",
        default="pointcloud",
        kind="str",
        choices=("pointcloud", "depth"),
        description="Sparse input: LiDAR PointCloud2 or depth Image (16UC1 mm / 32FC1 m)",
    ),
    ParamSpec(name="image_topic", default="rgb/image", kind="str", description="RGB Image topic"),
    ParamSpec(name="depth_topic", default="sensor_depth/image", kind="str", description="Depth Image input (depth)"),
    ParamSpec(
        name="depth_camera_info_topic",
        default="sensor_depth/camera_info",
        kind="str",
        description="Depth CameraInfo (depth)",
    ),
    *_COMMON,
    ParamSpec(
        name="method",
        default="default",
        kind="str",
        choices=METHODS,
        description="default (weight-free), cspn (learned here) or a published model: penet, enet (KITTI, use the "
        "RGB CameraInfo's K), cspn-nyu (NYU Depth v2, RGB-D / ToF)",
    ),
    ParamSpec(
        name="checkpoint",
        default="",
        kind="str",
        description="safetensors checkpoint (cspn: from train; penet / enet / cspn-nyu: from import-weights)",
    ),
    ParamSpec(name="device", default="auto", kind="str", choices=("auto", "cpu", "cuda"), description="Torch device"),
    ParamSpec(
        name="fp16", default=False, kind="bool", description="Published models on CUDA: float16 autocast (faster)"
    ),
    ParamSpec(
        name="num_threads",
        default=CompleterConfig().num_threads,
        kind="int",
        low=0,
        high=256,
        description="Torch CPU threads (0 = torch's default, one per core)",
    ),
    ParamSpec(
        name="iterations",
        default=CompleterConfig().iterations,
        kind="int",
        low=0,
        high=256,
        dynamic=True,
        description="CSPN iterations",
    ),
    ParamSpec(
        name="max_depth", default=100.0, kind="float", low=0.1, high=1000.0, dynamic=True, description="Max depth, m"
    ),
    ParamSpec(
        name="bands",
        default=CompleterConfig().bands,
        kind="int",
        low=1,
        high=64,
        description="Default method: row bands completed on parallel threads (the result does not depend on it)",
    ),
    ParamSpec(
        name="outlier_tolerance",
        default=CompleterConfig().outlier_tolerance,
        kind="float",
        low=0.0,
        high=10.0,
        description="Default method: drop sparse points this much (relative) behind the local near surface "
        "(LiDAR-camera parallax); 0 = off",
    ),
    ParamSpec(name="publish_points", default=False, kind="bool", dynamic=True, description="Publish dense cloud"),
    ParamSpec(
        name="points_decimation",
        default=4,
        kind="int",
        low=1,
        high=64,
        dynamic=True,
        description="Dense cloud: every n-th row and column",
    ),
    ParamSpec(name="publish_color", default=True, kind="bool", dynamic=True, description="Publish depth_color"),
    ParamSpec(name="publish_sparse", default=True, kind="bool", dynamic=True, description="Publish sparse_depth"),
    ParamSpec(
        name="tf_timeout",
        default=1.0,
        kind="float",
        low=0.0,
        high=60.0,
        description="tf extrinsics: hold a frame up to this long for its transform (as a tf message filter), s",
    ),
    ParamSpec(
        name="input_timeout_s",
        default=5.0,
        kind="float",
        low=0.1,
        high=3600.0,
        description="Warn when an input is silent this long, s",
    ),
    ParamSpec(
        name="debug_delay_ms",
        default=0,
        kind="int",
        low=0,
        high=60000,
        dynamic=True,
        description="Test hook: extra delay per completion, ms",
    ),
)

POINTCLOUD_TO_DEPTH_PARAMS: tuple[ParamSpec, ...] = (
    *_COMMON,
    ParamSpec(name="max_depth", default=1000.0, kind="float", low=0.1, high=1e4, description="Max depth, m"),
)

DYNAMIC_PARAMS = frozenset(p.name for p in DEPTH_COMPLETION_PARAMS if p.dynamic)
"""Parameters of depth_completion_node changeable at run time."""


_ON_OFF = frozenset({"on", "off"})


def _fail(name: str, why: str) -> ValueError:
    return ValueError(f"invalid parameter '{name}': {why}")


def _checked(spec: ParamSpec, value: Any) -> Any:
    """`value` converted to the spec's kind and range-checked; raises ValueError naming the parameter."""
    name = spec.name
    if spec.kind == "float_array" and _means_unset(value):
        return None
    if value is None:
        value = spec.default
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise _fail(name, f"expected a bool, got {value!r}")
        return value
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(name, f"expected an integer, got {value!r}")
    elif spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _fail(name, f"expected a finite number, got {value!r}")
        value = float(value)
    elif spec.kind == "str":
        if isinstance(value, bool) and set(spec.choices) >= _ON_OFF:
            value = "on" if value else "off"  # ROS and YAML 1.1 read unquoted on / off as booleans
        if not isinstance(value, str):
            raise _fail(name, f"expected a string, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise _fail(name, f"{value!r} is not one of {', '.join(spec.choices)}")
        return value
    elif spec.kind == "float_array":
        try:
            arr = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise _fail(name, f"expected a list of numbers, got {value!r}") from None
        if not all(math.isfinite(v) for v in arr):
            raise _fail(name, "contains NaN or infinity")
        return arr or None
    if spec.low is not None and value < spec.low:
        raise _fail(name, f"{value} is below the minimum {spec.low}")
    if spec.high is not None and value > spec.high:
        raise _fail(name, f"{value} is above the maximum {spec.high}")
    return value


def _means_unset(value: Any) -> bool:
    """An unset array parameter: None, or what `ros2 param dump` writes for one (`null`, read back as a string)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "~", "none"))


def _values(specs: Iterable[ParamSpec], values: Mapping[str, Any]) -> dict[str, Any]:
    specs = tuple(specs)
    known = {s.name for s in specs}
    unknown = sorted(set(values) - known)
    if unknown:
        raise _fail(unknown[0], "unknown parameter")
    return {s.name: _checked(s, values.get(s.name)) for s in specs}


def _extrinsics(v: Mapping[str, Any]) -> ExtrinsicsConfig:
    matrix = v["extrinsic_matrix"]
    if matrix is not None:
        if len(matrix) != 16:
            raise _fail("extrinsic_matrix", f"needs 16 numbers (4×4 row-major), got {len(matrix)}")
        if matrix[12:] != (0.0, 0.0, 0.0, 1.0):
            raise _fail("extrinsic_matrix", f"last row must be 0 0 0 1, got {matrix[12:]}")
        rot = [matrix[0:3], matrix[4:7], matrix[8:11]]
        for i in range(3):
            for j in range(3):
                dot = sum(rot[i][k] * rot[j][k] for k in range(3))
                if abs(dot - (1.0 if i == j else 0.0)) > 1e-3:
                    raise _fail("extrinsic_matrix", "the 3×3 block is not a rotation (R Rᵀ ≠ I)")
    xyz, quat = v["extrinsic_xyz"], v["extrinsic_quat_xyzw"]
    if xyz is not None and len(xyz) != 3:
        raise _fail("extrinsic_xyz", f"needs 3 numbers, got {len(xyz)}")
    if quat is not None:
        if len(quat) != 4:
            raise _fail("extrinsic_quat_xyzw", f"needs 4 numbers (x y z w), got {len(quat)}")
        norm = math.sqrt(sum(q * q for q in quat))
        if not 0.9 < norm < 1.1:
            raise _fail("extrinsic_quat_xyzw", f"not a unit quaternion (norm {norm:.3f})")
    if (xyz is None) != (quat is None):
        name = "extrinsic_quat_xyzw" if quat is None else "extrinsic_xyz"
        raise _fail(name, "extrinsic_xyz and extrinsic_quat_xyzw must be set together")
    if matrix is not None and xyz is not None:
        raise _fail("extrinsic_matrix", "set either extrinsic_matrix or extrinsic_xyz + extrinsic_quat_xyzw")
    calib = v["kitti_calib_dir"]
    if calib:
        for fname in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt"):
            if not (Path(calib) / fname).is_file():
                raise _fail("kitti_calib_dir", f"{fname} not found in {calib}")
    return ExtrinsicsConfig(
        matrix=matrix,
        xyz=xyz,
        quat_xyzw=quat,
        kitti_calib_dir=calib,
        kitti_camera_index=v["kitti_camera_index"],
        use_tf=v["use_tf"],
        tf_timeout_s=v.get("tf_timeout", 0.0),
    )


def _deskew(v: Mapping[str, Any]) -> DeskewConfig:
    if v["deskew"] == "on" and v["deskew_motion_source"] == "none":
        raise _fail("deskew_motion_source", "none, but deskew is on (compensation required): name an ego-motion source")
    if v["deskew_motion_source"] == "tf" and not v["odom_frame"].strip("/"):
        raise _fail("odom_frame", "empty; name the fixed frame of the ego motion (e.g. odom)")
    if v["deskew_motion_source"] in ("twist", "odometry", "imu") and not v["deskew_motion_topic"]:
        raise _fail("deskew_motion_topic", f"empty, but deskew_motion_source is {v['deskew_motion_source']}")
    return DeskewConfig(
        mode=v["deskew"],
        motion_source=v["deskew_motion_source"],
        odom_frame=v["odom_frame"].strip("/"),
        motion_topic=v["deskew_motion_topic"],
        scan_period=v["deskew_scan_period"],
        clockwise=v["deskew_clockwise"],
        time_unit=v["deskew_time_unit"],
    )


def depth_completion_config(values: Mapping[str, Any]) -> DepthCompletionNodeConfig:
    """Validated config of depth_completion_node from parameter values (missing names take defaults).

    Raises:
        ValueError: "invalid parameter '<name>': <why>" for the first bad value.
    """
    v = _values(DEPTH_COMPLETION_PARAMS, values)
    if v["method"] == "cspn" and not v["checkpoint"]:
        raise _fail("checkpoint", "method 'cspn' needs a checkpoint file")
    if v["method"] in PUBLISHED_METHODS and not v["checkpoint"]:
        raise _fail(
            "checkpoint",
            f"method {v['method']!r} needs a checkpoint file: import the authors' weights with "
            f"`depth-completion import-weights --format {v['method']} SRC --out X.safetensors`",
        )
    if v["checkpoint"] and not Path(v["checkpoint"]).is_file():
        raise _fail("checkpoint", f"file not found: {v['checkpoint']}")
    if v["min_depth"] >= v["max_depth"]:
        raise _fail("min_depth", f"{v['min_depth']} must be below max_depth {v['max_depth']}")
    completer = CompleterConfig(
        method=v["method"],
        checkpoint=v["checkpoint"] or None,
        device=v["device"],
        fp16=v["fp16"],
        iterations=v["iterations"],
        max_depth=v["max_depth"],
        num_threads=v["num_threads"],
        bands=v["bands"],
        outlier_tolerance=v["outlier_tolerance"],
    )
    return DepthCompletionNodeConfig(
        input_type=v["input_type"],
        image_topic=v["image_topic"],
        camera_info_topic=v["camera_info_topic"],
        points_topic=v["points_topic"],
        depth_topic=v["depth_topic"],
        depth_camera_info_topic=v["depth_camera_info_topic"],
        rectified=v["rectified"],
        min_depth=v["min_depth"],
        completer=completer,
        sync=SyncConfig(queue_size=v["queue_size"], slop=v["slop"]),
        qos=QosConfig(reliability=v["qos_reliability"], depth=v["qos_depth"]),
        extrinsics=_extrinsics(v),
        deskew=_deskew(v),
        outputs=OutputConfig(
            publish_points=v["publish_points"],
            points_decimation=v["points_decimation"],
            publish_color=v["publish_color"],
            publish_sparse=v["publish_sparse"],
        ),
        input_timeout_s=v["input_timeout_s"],
        debug_delay_ms=v["debug_delay_ms"],
    )


def updated_config(config: DepthCompletionNodeConfig, changes: Mapping[str, Any]) -> DepthCompletionNodeConfig:
    """`config` with run-time changes applied (only `DYNAMIC_PARAMS`); raises ValueError naming the parameter."""
    specs = {s.name: s for s in DEPTH_COMPLETION_PARAMS}
    checked: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in specs:
            raise _fail(name, "unknown parameter")
        if name not in DYNAMIC_PARAMS:
            raise _fail(name, "read-only at run time (restart the node to change it)")
        checked[name] = _checked(specs[name], value)
    completer = config.completer
    if "iterations" in checked:
        completer = replace(completer, iterations=checked["iterations"])
    if "max_depth" in checked:
        if checked["max_depth"] <= config.min_depth:
            raise _fail("max_depth", f"{checked['max_depth']} must be above min_depth {config.min_depth}")
        completer = replace(completer, max_depth=checked["max_depth"])
    outputs = replace(config.outputs, **{k: v for k, v in checked.items() if hasattr(config.outputs, k)})
    return replace(
        config,
        completer=completer,
        outputs=outputs,
        debug_delay_ms=checked.get("debug_delay_ms", config.debug_delay_ms),
    )


def pointcloud_to_depth_config(values: Mapping[str, Any]) -> PointcloudToDepthNodeConfig:
    """Validated config of pointcloud_to_depth_node (see `depth_completion_config`)."""
    v = _values(POINTCLOUD_TO_DEPTH_PARAMS, values)
    if v["min_depth"] >= v["max_depth"]:
        raise _fail("min_depth", f"{v['min_depth']} must be below max_depth {v['max_depth']}")
    return PointcloudToDepthNodeConfig(
        camera_info_topic=v["camera_info_topic"],
        points_topic=v["points_topic"],
        rectified=v["rectified"],
        min_depth=v["min_depth"],
        max_depth=v["max_depth"],
        sync=SyncConfig(queue_size=v["queue_size"], slop=v["slop"]),
        qos=QosConfig(reliability=v["qos_reliability"], depth=v["qos_depth"]),
        extrinsics=_extrinsics(v),
        deskew=_deskew(v),
    )


def load_params_file(path: str | Path, node_name: str) -> dict[str, Any]:
    """The `ros__parameters` of `node_name` (or `/**`, `/**/node_name`) from a ROS 2 params YAML file, flattened."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    out: dict[str, Any] = {}
    for key in ("/**", f"/**/{node_name}", node_name, f"/{node_name}"):
        section = data.get(key)
        if isinstance(section, dict):
            out.update(_flatten(section.get("ros__parameters", {})))
    return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# --------------------------------------------------------------------------- rclpy side


def declare_parameters(node: Any, specs: Iterable[ParamSpec]) -> None:
    """Declare `specs` on an rclpy node with descriptors (description, ranges, read-only unless dynamic).

    Raises:
        rclpy.exceptions.InvalidParameterValueException (a ValueError-like rclpy error naming the parameter)
        when an override is out of range or of the wrong type.
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    for spec in specs:
        desc = spec.description
        if spec.choices:
            desc = f"{desc} ({' | '.join(spec.choices)})"
        descriptor = ParameterDescriptor(description=desc, read_only=not spec.dynamic)
        if spec.kind == "float" and spec.low is not None and spec.high is not None:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)
            ]
        elif spec.kind == "int" and spec.low is not None and spec.high is not None:
            descriptor.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
        if spec.kind == "str" and set(spec.choices) >= _ON_OFF:
            descriptor.dynamic_typing = True  # `deskew:=off` arrives as a bool; the config function maps it
        if spec.kind == "float_array":
            # unset by default; ints or floats accepted from YAML (converted and checked by the config function).
            # A dumped unset value (`null`, which rcl reads as a string) keeps the parameter unset: dumps round-trip.
            descriptor.dynamic_typing = True
            override = getattr(node, "_parameter_overrides", {}).get(spec.name)
            keep_unset = override is not None and _means_unset(override.value)
            node.declare_parameter(spec.name, None, descriptor, ignore_override=keep_unset)
        else:
            node.declare_parameter(spec.name, spec.default, descriptor)


def read_parameters(node: Any, specs: Iterable[ParamSpec]) -> dict[str, Any]:
    """Current values of `specs` on `node` (None for unset)."""
    return {s.name: node.get_parameter(s.name).value for s in specs}


# --------------------------------------------------------------------------- command line
def prepare_ros_args(args: Sequence[str] | None) -> list[str]:
    """A node's command line (None: `sys.argv`) made ready for `rclpy.init`, checked by rcl's own parser.

    rcl refuses a list that mixes integers and floats (`-p extrinsic_matrix:=[1, 0.0, ...]`, as people write
    matrices), so the integers of such a `-p`/`--param` list are written as floats; nothing else changes.

    Raises:
        ValueError: naming the argument rcl cannot parse (a malformed `-p` value, a missing `--params-file`, ...).
    """
    import sys

    from rclpy.utilities import remove_ros_args

    out = list(sys.argv if args is None else args)
    for i in range(1, len(out)):
        if out[i - 1] in ("-p", "--param"):
            out[i] = _floats_if_mixed(out[i])
    try:
        remove_ros_args(out)  # parses the ROS arguments as rclpy.init will, without a context
    except RuntimeError as exc:  # rclpy's RCLInvalidROSArgsError / RCLError
        raise ValueError(str(exc).split(", at /")[0]) from None
    return out


def _floats_if_mixed(rule: str) -> str:
    """`name:=[1, 0.5]` -> `name:=[1.0, 0.5]` (a list of ints and floats only); any other rule unchanged."""
    import yaml

    name, sep, value = rule.partition(":=")
    if not sep or not value.strip().startswith("["):
        return rule
    try:
        items = yaml.safe_load(value)
    except yaml.YAMLError:
        return rule
    if not isinstance(items, list) or not items:
        return rule
    kinds = {type(v) for v in items}
    if kinds != {int, float}:
        return rule
    return f"{name}:=[{', '.join(repr(float(v)) for v in items)}]"
