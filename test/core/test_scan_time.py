"""Per-point time conventions of LiDAR drivers: field names, units, relative or absolute."""

from __future__ import annotations

import numpy as np
import pytest

from depth_completion_ros.core.errors import MessageFormatError
from depth_completion_ros.core.scan_time import find_time_field, relative_point_times

STAMP_NS = 1_317_000_123_456_789_012  # wall clock (KITTI era)
TRUE = np.linspace(-0.05, 0.049, 1000)  # seconds relative to the stamp


def test_find_time_field_prefers_the_known_names() -> None:
    assert find_time_field(["x", "y", "z", "intensity", "t", "ring"]) == "t"
    assert find_time_field(["x", "y", "z", "time"]) == "time"
    assert find_time_field(["x", "timestamp", "time_offset"]) == "timestamp"
    assert find_time_field(["x", "offset_time"]) == "offset_time"
    assert find_time_field(["x", "y", "z", "intensity", "time_sec", "time_nsec", "laser_id"]) == (
        "time_sec",
        "time_nsec",
    )
    assert find_time_field(["x", "y", "z", "intensity"]) is None
    assert find_time_field(["x", "time_sec"]) is None


@pytest.mark.parametrize(
    ("values", "unit", "absolute", "tol"),
    [
        (np.rint((TRUE + 0.05) * 1e9).astype(np.uint32), "ns", False, 1e-9),  # Ouster `t`: uint32 ns from the stamp
        (TRUE.astype(np.float32), "s", False, 1e-8),  # Velodyne `time`: float32 s, may be negative
        (np.rint(TRUE * 1e6).astype(np.int32), "us", False, 1e-6),  # µs offsets
        (TRUE * 1e3, "ms", False, 1e-9),  # float ms
        (np.int64(STAMP_NS) + np.rint(TRUE * 1e9).astype(np.int64), "ns", True, 1e-9),  # Livox `timestamp` ns
        (STAMP_NS * 1e-9 + TRUE, "s", True, 1e-6),  # Hesai `timestamp`: float64 s since the epoch
        ((STAMP_NS // 1000 + np.rint(TRUE * 1e6)).astype(np.uint64), "us", True, 2e-6),  # µs since the epoch
    ],
)
def test_units_and_origins_are_detected(values, unit, absolute, tol) -> None:
    res = relative_point_times({"time": values}, "time", stamp_ns=STAMP_NS)
    assert (res.unit, res.absolute) == (unit, absolute)
    expected = TRUE + 0.05 if values.dtype == np.uint32 else TRUE
    assert np.abs(res.times - expected).max() < tol


def test_split_seconds_and_nanoseconds_fields() -> None:
    """Luminar: uint32 time_sec + uint32 time_nsec, absolute; exact in integers."""
    abs_ns = np.int64(STAMP_NS) + np.rint(TRUE * 1e9).astype(np.int64)
    cols = {"time_sec": (abs_ns // 10**9).astype(np.uint32), "time_nsec": (abs_ns % 10**9).astype(np.uint32)}
    res = relative_point_times(cols, ("time_sec", "time_nsec"), stamp_ns=STAMP_NS)
    assert res.absolute and np.abs(res.times - TRUE).max() < 1e-9


def test_explicit_unit_and_simulation_time() -> None:
    ns = np.rint((TRUE + 0.05) * 1e9).astype(np.uint32)
    assert np.allclose(relative_point_times({"t": ns}, "t", stamp_ns=STAMP_NS, unit="ns").times, TRUE + 0.05)
    # simulation time near 0: never "absolute", so relative times are not misread
    res = relative_point_times({"t": ns}, "t", stamp_ns=12_000_000_000)
    assert not res.absolute and res.unit == "ns"
    with pytest.raises(MessageFormatError, match="unit"):
        relative_point_times({"t": ns}, "t", stamp_ns=STAMP_NS, unit="minutes")


def test_unsynchronised_or_broken_times_are_refused() -> None:
    far = STAMP_NS * 1e-9 + 3600.0 + TRUE  # absolute, an hour off
    with pytest.raises(MessageFormatError, match="synchronised"):
        relative_point_times({"timestamp": far}, "timestamp", stamp_ns=STAMP_NS)
    with pytest.raises(MessageFormatError, match="NaN"):
        relative_point_times({"time": np.full(10, np.nan)}, "time", stamp_ns=STAMP_NS)


def test_luminar_bag_times(tmp_path) -> None:
    """The shared Luminar recording: time_sec/time_nsec are absolute and span about one scan."""
    from pathlib import Path

    bag = Path(__file__).resolve().parents[3] / "shared" / "data" / "luminar_pointcloud_bag" / "test.bag"
    if not bag.is_file():
        pytest.skip("../shared/data/luminar_pointcloud_bag absent")
    from rosbags.highlevel import AnyReader

    from depth_completion_ros.ros.conversions import pointcloud2_to_structured

    with AnyReader([bag]) as reader:
        conn = next(c for c in reader.connections if c.topic == "/luminar_pointcloud")
        _, _, raw = next(reader.messages(connections=[conn]))
        msg = reader.deserialize(raw, conn.msgtype)
    cols = pointcloud2_to_structured(msg)
    field = find_time_field(cols.dtype.names)
    assert field == ("time_sec", "time_nsec")
    stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
    res = relative_point_times(cols, field, stamp_ns=stamp_ns)
    assert res.absolute
    spread = float(res.times.max() - res.times.min())
    assert 0.005 < spread < 0.5, spread
