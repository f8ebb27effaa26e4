"""Errors raised by the core and the ROS shell.  Every error subclasses `DepthCompletionError`."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CalibrationError",
    "CheckpointError",
    "DataError",
    "DepthCompletionError",
    "MessageFormatError",
    "ShapeError",
    "check_shape",
]


class DepthCompletionError(Exception):
    """Base class of all depth_completion_ros errors."""


class ShapeError(DepthCompletionError, ValueError):
    """An array or tensor has the wrong shape, size or dtype."""


class MessageFormatError(DepthCompletionError, ValueError):
    """A ROS message cannot be converted (missing fields, bad lengths, unknown encoding, ...)."""


class CalibrationError(DepthCompletionError, ValueError):
    """Missing, uncalibrated or non-physical calibration (intrinsics, distortion, extrinsics)."""


class CheckpointError(DepthCompletionError, ValueError):
    """A checkpoint is unreadable, unsafe, or does not match the model it is loaded into."""


class DataError(DepthCompletionError, ValueError):
    """A data set file is missing, corrupt or inconsistent."""


def check_shape(name: str, shape: Sequence[int], expected: Sequence[int | str | None]) -> dict[str, int]:
    """Check `shape` against `expected` and return the sizes bound to symbolic names.

    `expected` holds ints (exact size), strings (a name that must bind to the same size wherever it
    appears, e.g. "H") or None (any size).  A leading "*" matches any number of leading dimensions.

    Raises:
        ShapeError: naming `name`, the actual and the expected shape.
    """
    shape = tuple(int(s) for s in shape)
    exp = list(expected)
    star = bool(exp) and exp[0] == "*"
    if star:
        exp = exp[1:]
        ok_rank = len(shape) >= len(exp)
        dims = shape[len(shape) - len(exp) :] if ok_rank else shape
    else:
        ok_rank = len(shape) == len(exp)
        dims = shape
    if not ok_rank:
        raise ShapeError(f"{name}: expected shape {_fmt(expected)}, got {shape}")
    bound: dict[str, int] = {}
    for size, want in zip(dims, exp, strict=False):
        if want is None:
            continue
        if isinstance(want, str):
            if bound.setdefault(want, size) != size:
                raise ShapeError(
                    f"{name}: expected shape {_fmt(expected)}, got {shape} ({want}={bound[want]} and {size})"
                )
        elif size != want:
            raise ShapeError(f"{name}: expected shape {_fmt(expected)}, got {shape}")
    return bound


def _fmt(expected: Sequence[int | str | None]) -> str:
    return "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
