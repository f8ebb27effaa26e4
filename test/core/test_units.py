"""Unit conversions: KITTI / mm PNG scales and the REP 118 NaN convention."""

from __future__ import annotations

import numpy as np

from depth_completion_ros.core import units


def test_kitti_png_round_trip() -> None:
    metres = np.array([[0.0, 1.0, 12.34], [80.0, 255.99, np.nan]], dtype=np.float32)
    png = units.metres_to_kitti_png(metres)
    assert png.dtype == np.uint16
    assert png.tolist() == [[0, 256, round(12.34 * 256)], [80 * 256, round(255.99 * 256), 0]]
    back = units.kitti_png_to_metres(png)
    assert np.allclose(back[np.isfinite(metres)], np.nan_to_num(metres)[np.isfinite(metres)], atol=1 / 512)


def test_png_clips_out_of_range() -> None:
    assert units.metres_to_kitti_png(np.array([300.0, -2.0, np.inf])).tolist() == [65535, 0, 0]
    assert units.metres_to_millimetres_u16(np.array([1.2345, 70.0])).tolist() == [1234, 65535]
    assert units.millimetres_to_metres(np.array([1500], np.uint16)).tolist() == [1.5]


def test_rep118_conversions_mark_every_invalid_value() -> None:
    x = np.array([np.nan, np.inf, -1.0, -np.inf, 0.0, 3.0, 1e-6], dtype=np.float32)
    rep = units.depth_to_rep118(x)
    assert rep.dtype == np.float32
    assert np.isnan(rep[:5]).all()
    assert rep[5:].tolist() == [3.0, np.float32(1e-6)]
    core = units.rep118_to_depth(x)
    assert core.dtype == np.float32
    assert core.tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 3.0, np.float32(1e-6)]
    assert units.rep118_to_depth(rep).tolist() == core.tolist()
