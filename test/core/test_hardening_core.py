"""Regression tests of issue 12 in the core: checkpoints cannot size memory or work, degenerate cameras are refused.

Class 2: every CSPNModelConfig field is bounded (a checkpoint's metadata sizes the model), the tensor shapes of a
file's header are checked against the configuration before any tensor is read or the model allocated, and the
work per frame (iterations) is bounded; run-time changes of iterations / max_depth happen in memory.
Class 3: K, P, R and the image size are checked against each other; the error names the field.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from depth_completion_ros.core import checkpoint as ckpt
from depth_completion_ros.core.camera import CameraModel
from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
from depth_completion_ros.core.errors import CalibrationError, CheckpointError
from depth_completion_ros.core.model import MAX_ITERATIONS, CSPNModelConfig, CSPNNet

SMALL = CSPNModelConfig(base_width=4, depth=2, max_width=8, iterations=2)


def _header_only_checkpoint(path: Path, config: dict, tensors: dict[str, list[int]] | None = None) -> Path:
    """A safetensors file written by hand: the given config in the metadata, tiny (or stated) tensors."""
    header: dict = {
        "__metadata__": {"format": ckpt.FORMAT_TAG, "format_version": "1", "config": json.dumps(config), "extra": "{}"}
    }
    offset = 0
    for name, shape in (tensors or {"w": [1]}).items():
        n = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("base_width", 8192, "base_width"),
        ("max_width", 1 << 20, "max_width"),
        ("blocks_per_stage", 1e6, "blocks_per_stage must be an integer"),
        ("blocks_per_stage", 1_000_000, "blocks_per_stage must be in"),
        ("iterations", 1_000_000_000, "iterations must be in"),
        ("iterations", 1e9, "iterations must be an integer"),
        ("depth", True, "depth must be an integer"),
        ("dilation", 10_000, "dilation"),
        ("use_confidence_gate", "yes", "use_confidence_gate"),
        ("min_depth", "0.1", "min_depth must be a number"),
    ],
)
def test_checkpoint_config_fields_are_bounded(tmp_path: Path, field: str, value, match: str) -> None:
    config = SMALL.to_dict() | {field: value}
    if field == "base_width":
        config["max_width"] = value  # a consistent request for a huge model
    path = _header_only_checkpoint(tmp_path / "x.safetensors", config)
    assert path.stat().st_size < 1000
    with pytest.raises(CheckpointError, match=match):
        ckpt.read_checkpoint_metadata(path)


def test_parameter_budget_is_checked_without_building() -> None:
    config = SMALL.to_dict() | {"base_width": 1024, "max_width": 4096, "depth": 7, "blocks_per_stage": 64}
    with pytest.raises(ValueError, match="weights"):
        CSPNModelConfig.from_dict(config)
    for cfg in (SMALL, CSPNModelConfig()):
        assert cfg.parameter_count() == sum(p.numel() for p in CSPNNet(cfg).parameters())


def test_header_shapes_checked_before_tensors_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _header_only_checkpoint(tmp_path / "x.safetensors", SMALL.to_dict(), {"stem.0.0.weight": [50000, 5, 3, 3]})

    def no_read(*args, **kwargs):
        raise AssertionError("tensors were read before the header was checked")

    monkeypatch.setattr("safetensors.torch.load_file", no_read)
    with pytest.raises(CheckpointError, match=r"missing keys|mismatched shapes"):
        ckpt.load_checkpoint(path)


def test_runtime_iterations_apply_to_the_learned_model_without_reload(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    ckpt.save_checkpoint(path, CSPNNet(SMALL))
    completer = DepthCompleter(CompleterConfig(method="cspn", checkpoint=path, device="cpu"))
    assert completer.iterations == 2
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    sparse = np.where(rng.random((40, 56)) < 0.1, rng.uniform(2, 20, (40, 56)), 0).astype(np.float32)
    before = completer.complete(rgb, sparse)[0]
    path.unlink()  # a reload would fail now
    completer.reconfigure(iterations=9, max_depth=5.0)
    assert completer.iterations == 9
    after = completer.complete(rgb, sparse)[0]
    assert after.max() <= 5.0
    assert not np.allclose(np.minimum(before, 5.0), after)  # the propagation ran 9 steps, not 2
    with pytest.raises(ValueError, match="iterations"):
        completer.reconfigure(iterations=MAX_ITERATIONS + 1)
    assert completer.iterations == 9  # a refused change keeps the model in use


K = np.array([[700.0, 0.0, 620.0], [0.0, 700.0, 187.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(
    ("field", "change", "match"),
    [
        ("K", {(1, 1): 0.0}, r"K\[1,1\] \(fy\)"),
        ("K", {(1, 1): -700.0}, r"K\[1,1\] \(fy\)"),
        ("K", {(0, 0): 1e-30, (1, 1): 1e-30}, r"K\[0,0\] \(fx\) = 1e-30"),
        ("K", {(0, 1): 1e6}, r"K\[0,1\] \(skew\)"),
        ("K", {(0, 0): 1e9, (1, 1): 1e9}, r"K\[0,0\] \(fx\)"),
        ("K", {(1, 1): 7.0}, r"K: fx/fy"),
        ("K", {(2, 2): 0.0}, r"K: not an intrinsic matrix"),
        ("K", {(0, 2): 1e9}, r"K: principal point"),
        ("P", {(1, 1): 0.0}, r"P\[1,1\] \(fy\)"),
        ("P", {(1, 1): 1e-30}, r"P\[1,1\] \(fy\)"),
        ("P", {(0, 1): 1e6}, r"P\[0,1\] \(skew\)"),
        ("P", {(2, 0): 0.5}, r"P: not an intrinsic matrix"),
        ("R", {(2, 2): -1.0}, r"R is not a rotation"),
        ("R", {(0, 0): 2.0}, r"R is not a rotation"),
    ],
)
def test_degenerate_camera_is_refused_naming_the_field(field: str, change: dict, match: str) -> None:
    mats = {"K": K.copy(), "P": np.hstack([K, np.zeros((3, 1))]), "R": np.eye(3)}
    for idx, value in change.items():
        mats[field][idx] = value
    with pytest.raises(CalibrationError, match=match):
        CameraModel(width=1242, height=375, rectified=True, **mats)


def test_camera_size_bounded_and_kitti_accepted() -> None:
    with pytest.raises(CalibrationError, match="size"):
        CameraModel(width=10**6, height=375, K=K)
    with pytest.raises(CalibrationError, match="binning_x"):
        CameraModel(width=1242, height=375, K=K, binning_x=5000)
    P2 = np.array([[721.5, 0.0, 609.6, 44.86], [0.0, 721.5, 172.9, 0.2164], [0.0, 0.0, 1.0, 0.002746]])
    cam = CameraModel.from_projection(P2, 1242, 375)
    assert cam.cropped(100, 50, 400, 200).image_size == (400, 200)
    assert cam.scaled(0.5, 0.5).image_size == (621, 188)
