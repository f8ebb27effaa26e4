"""The tools as a workspace user meets them: data folder lookup (never next to the installed Python files),
kitti-to-bag's default single-frame drive and its one-line error without tf2_msgs."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_completion_ros.cli import main
from depth_completion_ros.tools.kitti_to_bag import SINGLE_FRAME_REPEAT
from depth_completion_ros.tools.project import DATA_ENV, default_data_dir, default_kitti_dir

CAM_TO_CAM = """calib_time: 09-Jan-2012 13:57:47
S_rect_02: 6.400000e+01 4.800000e+01
R_rect_00: 1 0 0 0 1 0 0 0 1
P_rect_02: 5.000000e+01 0 3.200000e+01 0 0 5.000000e+01 2.400000e+01 0 0 0 1 0
"""
VELO_TO_CAM = "R: 0 -1 0 0 0 -1 1 0 0\nT: 0 -0.08 -0.27\n"


def _single_frame(root: Path) -> Path:
    """The kitti_dc_frame layout at 64x48: raw/lidar_data.bin, raw/calib_*.txt, depth_completion/test_image.png."""
    (root / "raw").mkdir(parents=True)
    (root / "depth_completion").mkdir()
    (root / "raw" / "calib_cam_to_cam.txt").write_text(CAM_TO_CAM)
    (root / "raw" / "calib_velo_to_cam.txt").write_text(VELO_TO_CAM)
    cv2.imwrite(str(root / "depth_completion" / "test_image.png"), np.full((48, 64, 3), 90, np.uint8))
    rng = np.random.default_rng(0)
    np.column_stack([rng.uniform(2, 20, (200, 3)), rng.random(200)]).astype(np.float32).tofile(
        root / "raw" / "lidar_data.bin"
    )
    return root


def test_data_dir_from_environment_then_current_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "mydata"))
    assert default_kitti_dir() == tmp_path / "mydata" / "kitti_dc_frame"
    monkeypatch.delenv(DATA_ENV)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")  # ../shared/data from a checkout
    assert default_data_dir() == tmp_path / "shared" / "data"
    monkeypatch.chdir(tmp_path)
    assert default_data_dir() == tmp_path / "shared" / "data"


def test_single_frame_default_is_a_short_drive_with_its_rate(tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    src = _single_frame(tmp_path / "frame")
    bag = tmp_path / "bag"
    assert main(["kitti-to-bag", str(src), "--out", str(bag), "--rate-hz", "5"]) == 0
    with AnyReader([bag]) as reader:
        stamps = [t for c, t, _ in reader.messages() if c.topic == "/kitti/velo/points"]
    assert len(stamps) == SINGLE_FRAME_REPEAT > 1
    assert set(np.diff(stamps)) == {200_000_000}  # 5 Hz
    assert "depth_completion_ros.rate_hz: '5.0'" in (bag / "metadata.yaml").read_text()


def test_without_tf2_msgs_one_line_naming_the_package(tmp_path: Path, monkeypatch, capsys) -> None:
    src = _single_frame(tmp_path / "frame")
    monkeypatch.setitem(sys.modules, "tf2_msgs", None)
    monkeypatch.setitem(sys.modules, "tf2_msgs.msg", None)
    assert main(["kitti-to-bag", str(src), "--out", str(tmp_path / "bag"), "--repeat", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'tf2_msgs' is not installed" in err[0]
    assert "ros-$ROS_DISTRO-tf2-msgs" in err[0]
    assert not (tmp_path / "bag").exists()


@pytest.mark.parametrize("command", ["play", "kitti-to-bag"])
def test_cli_commands_behind_ros2_run_entries(command: str, capsys) -> None:
    # lib/depth_completion_ros/{play,kitti_to_bag} call cli.main([command, *argv]) (CMakeLists.txt)
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"depth-completion {command}" in capsys.readouterr().out
