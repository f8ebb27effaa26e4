"""Per-point capture times of a LiDAR cloud: which field holds them and what unit / origin it uses.

Driver conventions recognised (field names, in order of preference):

| field(s) | typical drivers | stored as |
|---|---|---|
| `t` | Ouster | uint32 ns, relative to the header stamp |
| `time` | Velodyne (ROS 2 velodyne_pointcloud), Robosense | float32 s, relative to the header stamp |
| `timestamp` | Hesai, Robosense, Livox | float64 s or uint64 ns, absolute (epoch) |
| `time_offset`, `offset_time` | Livox, Unitree | ns / µs / s, relative to the header stamp |
| `time_sec` + `time_nsec` | Luminar | uint32 + uint32, absolute |

Origin and unit are detected from the values (`unit="auto"`): when the header stamp is a wall-clock time
(after 1970-01-12, i.e. not simulation time near 0), times whose median lies within `ABSOLUTE_TOLERANCE_S` of
it in one of s / ms / µs / ns are absolute in that unit; otherwise they are relative to the header stamp, in the
unit that makes their spread closest to a scan (`TYPICAL_SCAN_S`; the candidates differ by 1000x, so a spread
between ~3 ms and ~3 s is read right).  A given `unit` fixes the unit; the origin is still detected.  All results
are float64 seconds relative to the header stamp; times whose median ends up more than `ABSOLUTE_TOLERANCE_S`
from the stamp (e.g. a LiDAR clock not synchronised to ROS time) are refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import MessageFormatError

__all__ = [
    "ABSOLUTE_TOLERANCE_S",
    "TIME_FIELDS",
    "TIME_UNITS",
    "PointTimes",
    "find_time_field",
    "relative_point_times",
]

TIME_FIELDS: tuple[str, ...] = ("t", "time", "timestamp", "time_offset", "offset_time")
"""Single-field names of per-point times, in order of preference."""
SPLIT_TIME_FIELDS: tuple[tuple[str, str], ...] = (("time_sec", "time_nsec"),)
"""(seconds, nanoseconds) field pairs of absolute per-point times."""
TIME_UNITS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
"""Seconds per unit."""
ABSOLUTE_TOLERANCE_S = 1.0
"""Absolute times lie within this of the header stamp (seconds); relative ones have their median within it."""
_WALL_CLOCK_S = 1e6  # stamps below this (simulation time) cannot tell absolute from relative times
TYPICAL_SCAN_S = 0.1


class PointTimes:
    """Per-point times decoded from a cloud: `times` (N,) float64 s relative to the header stamp, and how."""

    __slots__ = ("absolute", "field", "times", "unit")

    def __init__(self, times: np.ndarray, field: str, unit: str, absolute: bool) -> None:
        self.times = times
        self.field = field
        self.unit = unit
        self.absolute = absolute

    def describe(self) -> str:
        """E.g. "field 't' (ns, relative to the header stamp)"."""
        origin = "absolute" if self.absolute else "relative to the header stamp"
        return f"field {self.field!r} ({self.unit}, {origin})"


def find_time_field(names: Sequence[str]) -> str | tuple[str, str] | None:
    """The per-point time field among a cloud's field `names`: a name, a (sec, nsec) pair, or None."""
    present = set(names)
    for name in TIME_FIELDS:
        if name in present:
            return name
    for pair in SPLIT_TIME_FIELDS:
        if pair[0] in present and pair[1] in present:
            return pair
    return None


def _robust_stats(x: np.ndarray) -> tuple[float, float]:
    """(median, spread) of finite values, from a strided subsample (cheap on 100k points)."""
    step = max(1, x.shape[0] // 4096)
    sample = np.asarray(x[::step], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise MessageFormatError("per-point times are all NaN / inf")
    return float(np.median(sample)), float(sample.max() - sample.min())


def _unit_by_spread(spread: float, magnitude: float) -> str:
    """The unit that makes a relative time spread (or, when zero, the magnitude) closest to a scan."""
    ref = spread if spread > 0 else magnitude
    if ref <= 0:
        return "s"
    return min(TIME_UNITS, key=lambda u: abs(math.log10(ref * TIME_UNITS[u] / TYPICAL_SCAN_S)))


def relative_point_times(
    columns: Mapping[str, np.ndarray], field: str | tuple[str, str], *, stamp_ns: int, unit: str = "auto"
) -> PointTimes:
    """Capture times of the points relative to the header stamp, float64 seconds.

    Args:
        columns: the cloud's fields by name ((N,) arrays, any numeric dtype), e.g. a structured array.
        field: a name from `find_time_field`, or a (seconds, nanoseconds) pair.
        stamp_ns: the cloud's header stamp, ns since the epoch.
        unit: "auto" or one of `TIME_UNITS` (ignored for a (sec, nsec) pair).

    Returns:
        `PointTimes` with (N,) float64 times, s (NaN stays NaN).

    Raises:
        MessageFormatError: unknown unit, or every time non-finite.
    """
    if unit != "auto" and unit not in TIME_UNITS:
        raise MessageFormatError(f"unknown time unit {unit!r} (expected auto or one of {', '.join(TIME_UNITS)})")
    stamp_s = stamp_ns * 1e-9
    if isinstance(field, tuple):
        sec = np.asarray(columns[field[0]]).astype(np.int64)
        nsec = np.asarray(columns[field[1]]).astype(np.int64)
        median, _ = _robust_stats(sec)
        absolute = stamp_s > _WALL_CLOCK_S and abs(median - stamp_s) < ABSOLUTE_TOLERANCE_S + 1.0
        base_ns = stamp_ns if absolute else 0
        times = ((sec * 1_000_000_000 + nsec) - base_ns).astype(np.float64) * 1e-9
        return _checked(PointTimes(times, f"{field[0]}+{field[1]}", "s+ns", absolute))
    raw = np.asarray(columns[field])
    median, spread = _robust_stats(raw)
    candidates = [] if stamp_s < _WALL_CLOCK_S else list(TIME_UNITS) if unit == "auto" else [unit]
    for u in candidates:  # absolute in some unit: the median lands near the stamp
        if abs(median * TIME_UNITS[u] - stamp_s) < ABSOLUTE_TOLERANCE_S:
            if raw.dtype.kind in "iu" and u == "ns":
                times = (raw.astype(np.int64) - np.int64(stamp_ns)).astype(np.float64) * 1e-9  # exact in integers
            elif raw.dtype.kind in "iu":
                scale = round(1e9 * TIME_UNITS[u])
                times = (raw.astype(np.int64) * scale - np.int64(stamp_ns)).astype(np.float64) * 1e-9
            else:
                times = raw.astype(np.float64) * TIME_UNITS[u] - stamp_s
            return _checked(PointTimes(times, field, u, True))
    u = unit if unit != "auto" else _unit_by_spread(spread, abs(median))
    return _checked(PointTimes(raw.astype(np.float64) * TIME_UNITS[u], field, u, False))


def _checked(result: PointTimes) -> PointTimes:
    median, _ = _robust_stats(result.times)
    if abs(median) > ABSOLUTE_TOLERANCE_S:
        raise MessageFormatError(
            f"per-point times in {result.describe()} lie {median:.3g} s from the header stamp (more than "
            f"{ABSOLUTE_TOLERANCE_S} s): is the LiDAR clock synchronised, or is the time unit wrong?"
        )
    return result
