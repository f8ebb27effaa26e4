"""`depth-completion complete` with a published model ("tiny-test"): --intrinsics, --camera-info, refusals."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from depth_completion_ros.cli import main
from depth_completion_ros.core.calibration import read_camera_info_yaml
from depth_completion_ros.core.camera import CameraModel
from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
from depth_completion_ros.core.errors import CalibrationError
from depth_completion_ros.core.published.importer import save_published
from depth_completion_ros.core.units import kitti_png_to_metres

H, W = 30, 41

CAMERA_YAML = """\
image_width: 41
image_height: 30
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [500.0, 0.0, 20.0, 0.0, 500.0, 15.0, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.1, 0.01, 0.0, 0.0, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [490.0, 0.0, 21.0, 0.0, 0.0, 491.0, 14.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


@pytest.fixture
def files(tmp_path, tiny_arch, rng):
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    sp = np.zeros((H, W), np.uint16)
    sp[1::3, ::4] = rng.integers(5 * 256, 20 * 256, sp[1::3, ::4].shape)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / "sparse.png"), sp)
    torch.manual_seed(0)
    save_published(
        tmp_path / "tiny.safetensors", tiny_arch, tiny_arch.build(tiny_arch.default_config), tiny_arch.default_config
    )
    (tmp_path / "camera.yaml").write_text(CAMERA_YAML)
    return tmp_path, rgb, kitti_png_to_metres(sp)


def _args(tmp_path, *extra):
    return [
        "complete",
        "--rgb",
        str(tmp_path / "rgb.png"),
        "--sparse",
        str(tmp_path / "sparse.png"),
        "--out-depth",
        str(tmp_path / "d.png"),
        "--method",
        "tiny-test",
        "--checkpoint",
        str(tmp_path / "tiny.safetensors"),
        "--device",
        "cpu",
        *extra,
    ]


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("how", ["intrinsics", "camera-info", "camera-info-raw"])
def test_complete_with_camera(files, how):
    tmp_path, rgb, sparse = files
    extra = {
        "intrinsics": ["--intrinsics", "500,500,20,15"],
        "camera-info": ["--camera-info", str(tmp_path / "camera.yaml")],
        "camera-info-raw": ["--camera-info", str(tmp_path / "camera.yaml"), "--raw-image"],
    }[how]
    assert main(_args(tmp_path, *extra)) == 0
    got = kitti_png_to_metres(cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED))
    K = {
        "intrinsics": [[500.0, 0, 20], [0, 500, 15], [0, 0, 1]],
        "camera-info": [[490.0, 0, 21], [0, 491, 14], [0, 0, 1]],
        "camera-info-raw": [[500.0, 0, 20], [0, 500, 15], [0, 0, 1]],
    }[how]
    completer = DepthCompleter(CompleterConfig(method="tiny-test", checkpoint=tmp_path / "tiny.safetensors"))
    ref, _ = completer.complete(rgb, sparse, CameraModel(width=W, height=H, K=np.array(K)))
    np.testing.assert_allclose(got, ref, atol=1 / 256)


def test_camera_missing_or_bad(files, capsys):
    tmp_path, _, _ = files
    assert main(_args(tmp_path)) == 2
    assert "needs the camera intrinsics" in _err(capsys)
    assert main(_args(tmp_path, "--intrinsics", "500,500,20")) == 2
    assert "four numbers" in _err(capsys)
    assert main(_args(tmp_path, "--intrinsics", "0,500,20,15")) == 2
    assert "uncalibrated" in _err(capsys)
    assert main(_args(tmp_path, "--camera-info", str(tmp_path / "nope.yaml"))) == 2
    assert "not found" in _err(capsys)
    (tmp_path / "bad.yaml").write_text("image_width: [\n")
    assert main(_args(tmp_path, "--camera-info", str(tmp_path / "bad.yaml"))) == 2
    assert "not a readable YAML file" in _err(capsys)
    (tmp_path / "small.yaml").write_text(CAMERA_YAML.replace("image_width: 41", "image_width: 82"))
    assert main(_args(tmp_path, "--camera-info", str(tmp_path / "small.yaml"))) == 2
    assert "camera model is for 82x30 images, the input is 41x30" in _err(capsys)


def test_unknown_method(files, capsys):
    tmp_path, _, _ = files
    args = _args(tmp_path)
    args[args.index("tiny-test")] = "nlspn"
    assert main(args) == 2
    assert "unknown published model 'nlspn'" in _err(capsys)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("image_width: 41\n", ""), "image_width must be a positive integer"),
        (lambda t: t.replace("data: [-0.1, 0.01, 0.0, 0.0, 0.0]", "data: [-0.1, 0.01]"), "has 2 values for 1x5"),
        (lambda t: t.replace("plumb_bob", "fisheye62"), "unknown distortion_model 'fisheye62'"),
        (lambda t: t.replace("data: [500.0, 0.0, 20.0", "data: [.nan, 0.0, 20.0"), "NaN"),
        (lambda t: t.replace("  rows: 3\n  cols: 4", "  rows: 4\n  cols: 3"), "projection_matrix must be 3x4"),
        (lambda t: "- 1\n- 2\n", "expected a YAML mapping"),
        (
            lambda t: (
                t.replace("490.0, 0.0, 21.0", "0.0, 0.0, 0.0")
                .replace("491.0", "0.0")
                .replace("14.0, 0.0, 0.0, 0.0, 1.0", "0.0, 0.0, 0.0, 0.0, 0.0")
            ),
            "need projection_matrix",
        ),
    ],
    ids=["no-width", "short-D", "model", "nan", "P-shape", "list", "no-P"],
)
def test_camera_info_yaml_refusals(tmp_path, edit, match):
    path = tmp_path / "c.yaml"
    path.write_text(edit(CAMERA_YAML))
    with pytest.raises(CalibrationError, match=match) as info:
        read_camera_info_yaml(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_camera_info_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CAMERA_YAML)
    cam = read_camera_info_yaml(path)
    assert cam.rectified and cam.image_size == (W, H)
    np.testing.assert_array_equal(cam.projection_matrix[:, :3], [[490, 0, 21], [0, 491, 14], [0, 0, 1]])
    np.testing.assert_array_equal(cam.D, [-0.1, 0.01, 0, 0, 0])
    raw = read_camera_info_yaml(path, rectified=False)
    np.testing.assert_array_equal(raw.projection_matrix[:, :3], [[500, 0, 20], [0, 500, 15], [0, 0, 1]])
