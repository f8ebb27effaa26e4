"""Message <-> array conversions: PointCloud2, Image and CameraInfo.  The one place where messages become arrays.

Pure functions over message objects (no rclpy node code).  Readers use only the message attributes, so they
also accept duck-typed messages with the same fields (e.g. `rosbags` deserialized messages).

Semantics follow the upstream libraries:
- PointCloud2: `sensor_msgs_py.point_cloud2` (`read_points`, `read_points_numpy`): a field with `count > 1`
  becomes sub-fields `name_0 .. name_{count-1}`, an empty name becomes `unnamed_field_<i>`, and `skip_nans`
  drops points with a NaN (not inf) in any selected field, only when `is_dense` is False.  Unlike upstream,
  row padding (`row_step > width * point_step`) is honoured and organized clouds reshape to (H, W).
- Image: `cv_bridge.CvBridge.imgmsg_to_cv2` / `cv2_to_imgmsg`: encodings, shapes ((H, W) for one channel,
  (H, W, C) otherwise) and colour / bit-depth conversions as cv_bridge does them.
- Depth images: REP 118 (16UC1 millimetres, 0 = missing; 32FC1 metres, NaN = missing) <-> core depth
  (float32 metres, 0 = missing) through `core.units`.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header

from depth_completion_ros.core.camera import CameraModel, DistortionModel
from depth_completion_ros.core.errors import CalibrationError, MessageFormatError, ShapeError, check_shape
from depth_completion_ros.core.units import (
    depth_to_rep118,
    metres_to_millimetres_u16,
    millimetres_to_metres,
    rep118_to_depth,
)

__all__ = [
    "CLOUD_LAYOUTS",
    "DEPTH_ENCODINGS",
    "array_to_image",
    "camera_info_to_model",
    "camera_model_to_camera_info",
    "cloud_field_names",
    "depth_metres_to_image",
    "encoding_to_dtype",
    "image_to_array",
    "image_to_depth_metres",
    "pack_rgb",
    "pointcloud2_to_structured",
    "pointcloud2_to_xyz",
    "unpack_rgb",
    "xyz_to_pointcloud2",
]

_NATIVE_BIG = sys.byteorder == "big"
_NATIVE_ORDER = ">" if _NATIVE_BIG else "<"
_CV_MAX_CHANNELS = 512  # OpenCV CV_CN_MAX

# ---------------------------------------------------------------------------------------------------------------
# PointCloud2
# ---------------------------------------------------------------------------------------------------------------

_POINTFIELD_DTYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}
_DUMMY_FIELD_PREFIX = "unnamed_field"  # as sensor_msgs_py

CLOUD_LAYOUTS: tuple[str, ...] = ("xyz", "xyzi", "xyzrgb")
"""Layouts `xyz_to_pointcloud2` writes: float32 x, y, z (+ intensity float32 | + rgb packed in a float32)."""

# (name, offset, datatype, count) per PointField: the cache key of a cloud's layout.
_Layout = tuple[tuple[str, int, int, int], ...]
# Expanded sub-field name -> (byte offset in the point, dtype in native byte order).
_FieldTable = dict[str, tuple[int, np.dtype]]


def _layout_of(msg: Any) -> _Layout:
    return tuple((str(f.name), int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields)


@functools.lru_cache(maxsize=128)
def _field_table(layout: _Layout, point_step: int) -> _FieldTable:
    """Validate a field layout and expand it to sub-fields (cached per layout)."""
    table: _FieldTable = {}
    for i, (name, offset, datatype, count) in enumerate(layout):
        label = name or f"#{i}"
        if datatype not in _POINTFIELD_DTYPES:
            raise MessageFormatError(f"PointCloud2 field {label!r} has unknown datatype {datatype} (expected 1..8)")
        if count < 1:
            raise MessageFormatError(f"PointCloud2 field {label!r} has count {count} (must be >= 1)")
        if offset < 0:
            raise MessageFormatError(f"PointCloud2 field {label!r} has negative offset {offset}")
        dtype = _POINTFIELD_DTYPES[datatype]
        end = offset + dtype.itemsize * count
        if end > point_step:
            raise MessageFormatError(
                f"PointCloud2 point_step {point_step} is smaller than the fields: field {label!r} ends at byte {end}"
            )
        base = name if name else f"{_DUMMY_FIELD_PREFIX}_{i}"
        for k in range(count):
            sub = f"{base}_{k}" if count > 1 else base
            if sub in table:
                raise MessageFormatError(f"PointCloud2 has duplicate field name {sub!r}")
            table[sub] = (offset + k * dtype.itemsize, dtype)
    return table


@functools.lru_cache(maxsize=128)
def _structured_dtype(layout: _Layout, point_step: int, bigendian: bool) -> np.dtype:
    """Structured dtype of one point, byte order of the message, itemsize = point_step (cached per layout)."""
    table = _field_table(layout, point_step)
    order = ">" if bigendian else "<"
    return np.dtype(
        {
            "names": list(table),
            "formats": [dt.newbyteorder(order) for _, dt in table.values()],
            "offsets": [off for off, _ in table.values()],
            "itemsize": point_step,
        }
    )


def _as_bytes_array(data: Any) -> np.ndarray:
    """Message `data` (array.array('B'), bytes, list, numpy uint8, ...) -> 1-D uint8 array, zero-copy if possible."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, list | tuple):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def _cloud_geometry(msg: Any) -> tuple[np.ndarray, int, int, int, int]:
    """Validate sizes of a PointCloud2; return (data uint8, height, width, point_step, row_step)."""
    h, w = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    buf = _as_bytes_array(msg.data)
    if h * w > 0:
        if point_step <= 0:
            raise MessageFormatError(f"PointCloud2 point_step is {point_step} for {h}x{w} points")
        if point_step * w > row_step:
            raise MessageFormatError(
                f"PointCloud2 point_step*width ({point_step}*{w} = {point_step * w}) > row_step ({row_step})"
            )
    if buf.size != row_step * h:
        raise MessageFormatError(
            f"PointCloud2 data length {buf.size} != row_step*height ({row_step}*{h} = {row_step * h})"
        )
    return buf, h, w, point_step, row_step


def cloud_field_names(msg: PointCloud2) -> list[str]:
    """Names of the (expanded) fields of a cloud, as `pointcloud2_to_structured` names them."""
    return list(_field_table(_layout_of(msg), int(msg.point_step)))


def pointcloud2_to_structured(msg: PointCloud2, *, organized: bool = False) -> np.ndarray:
    """PointCloud2 -> structured array of its points, one numpy field per (sub-)field, native byte order.

    Args:
        msg: the cloud; any field order, offsets, padding, row padding and byte order.
        organized: return (height, width) instead of (height*width,).

    Returns:
        (N,) or (H, W) structured array (itemsize = point_step, padding bytes kept).  It is a view of
        `msg.data` (no copy) when the byte order is native and rows are unpadded, else a copy.
        NaN points are kept (filter with `pointcloud2_to_xyz` or by hand).

    Raises:
        MessageFormatError: bad sizes, unknown datatype, duplicate names, fields beyond point_step.
    """
    buf, h, w, point_step, row_step = _cloud_geometry(msg)
    bigendian = bool(msg.is_bigendian)
    layout = _layout_of(msg)
    dtype = _structured_dtype(layout, point_step, bigendian)
    if h * w == 0:
        points = np.zeros((h, w), dtype=dtype)
    else:
        points = np.ndarray(shape=(h, w), dtype=dtype, buffer=buf, strides=(row_step, point_step))
    if bigendian != _NATIVE_BIG:
        points = points.astype(_structured_dtype(layout, point_step, _NATIVE_BIG))
    return points if organized else points.reshape(h * w)


def pointcloud2_to_xyz(
    msg: PointCloud2, *, skip_nans: bool = True, fields: Sequence[str] = ("x", "y", "z")
) -> np.ndarray:
    """PointCloud2 -> (N, k) float32 array of the named fields (the fast path for projection).

    Args:
        msg: the cloud (any layout; fields of any datatype are cast to float32).
        skip_nans: drop points with a NaN in any of `fields` (inf is kept), only when `msg.is_dense` is
            False, as `sensor_msgs_py.point_cloud2.read_points_numpy(..., skip_nans=True)` does.
        fields: (sub-)field names to read, in output column order.

    Returns:
        (N, k) float32, contiguous, in the cloud's frame (metres for x, y, z).  Without dropped points,
        N = height*width in row-major order, so an organized cloud reshapes to (H, W, k).

    Raises:
        MessageFormatError: a requested field is missing, or the cloud is malformed.
    """
    buf, h, w, point_step, row_step = _cloud_geometry(msg)
    table = _field_table(_layout_of(msg), point_step)
    missing = [name for name in fields if name not in table]
    if missing:
        raise MessageFormatError(f"PointCloud2 has no field(s) {missing} (fields: {list(table)})")
    k = len(fields)
    n = h * w
    if n == 0 or k == 0:
        return np.zeros((n, k), dtype=np.float32)
    order = ">" if msg.is_bigendian else "<"
    sel = [table[name] for name in fields]
    out = np.empty((n, k), dtype=np.float32)
    f32 = np.dtype(np.float32)
    if (
        order == _NATIVE_ORDER
        and point_step % 4 == 0
        and point_step // 4 <= _CV_MAX_CHANNELS
        and k <= _CV_MAX_CHANNELS
        and (h == 1 or row_step == w * point_step)
        and all(dt == f32 and off % 4 == 0 for off, dt in sel)
    ):
        # float32 fields on a 4-byte grid (x, y, z, ... at 0, 4, 8): one OpenCV channel shuffle, ~2x numpy.
        src = np.ndarray(shape=(n, 1, point_step // 4), dtype=f32, buffer=buf)
        pairs = [v for j, (off, _) in enumerate(sel) for v in (off // 4, j)]
        cv2.mixChannels([src], [out.reshape(n, 1, k)], pairs)
    else:
        grid = out.reshape(h, w, k)
        for j, (off, dt) in enumerate(sel):
            view = np.ndarray(
                shape=(h, w), dtype=dt.newbyteorder(order), buffer=buf, offset=off, strides=(row_step, point_step)
            )
            grid[..., j] = view  # casts to float32, swaps bytes when needed
    if skip_nans and not msg.is_dense and np.isnan(out).any():
        bad = np.isnan(out[:, 0])
        for j in range(1, k):
            bad |= np.isnan(out[:, j])
        # Boolean-index whole rows as opaque 4k-byte items: ~15x faster than out[~bad] on a 2-D array.
        rows = out.view(np.dtype((np.void, 4 * k))).reshape(n)
        out = rows[~bad].view(np.float32).reshape(-1, k)
    return out


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) float32 holding the bits 0x00RRGGBB (the PCL / rviz "rgb" field).

    Alpha is 0 so the float is never NaN (a NaN would make `skip_nans` drop coloured points).
    """
    c = np.asarray(colors)
    if c.shape[-1:] != (3,):
        raise ShapeError(f"colors: expected shape (..., 3), got {c.shape}")
    c = c.astype(np.uint32)
    packed = (c[..., 0] << np.uint32(16)) | (c[..., 1] << np.uint32(8)) | c[..., 2]
    return np.ascontiguousarray(packed, dtype=np.uint32).view(np.float32)


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(...) float32 packed "rgb" field (or uint32 "rgba") -> (..., 3) uint8 RGB."""
    bits = np.ascontiguousarray(rgb)
    if bits.dtype != np.uint32:
        bits = bits.astype(np.float32, copy=False).view(np.uint32)
    r = (bits >> np.uint32(16)) & np.uint32(0xFF)
    g = (bits >> np.uint32(8)) & np.uint32(0xFF)
    b = bits & np.uint32(0xFF)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def xyz_to_pointcloud2(
    points: np.ndarray,
    header: Header | None = None,
    *,
    fields: str = "xyz",
    colors: np.ndarray | None = None,
    intensity: np.ndarray | None = None,
) -> PointCloud2:
    """Points -> PointCloud2 with float32 fields x, y, z (+ intensity | + rgb), little/native byte order.

    Args:
        points: (N, 3) unorganized or (H, W, 3) organized, metres, in `header.frame_id`.  NaN / inf allowed.
        header: copied into the message (default: empty Header).
        fields: "xyz" (point_step 12), "xyzi" (16, needs `intensity`) or "xyzrgb" (16, needs `colors`).
        colors: (N, 3) or (H, W, 3) uint8 RGB, packed with `pack_rgb` into the float32 "rgb" field.
        intensity: (N,) or (H, W), any real dtype, stored as float32.

    Returns:
        PointCloud2; `is_dense` is True when every point is finite.

    Raises:
        ShapeError: arrays of the wrong shape.  MessageFormatError: unknown `fields`.
    """
    if fields not in CLOUD_LAYOUTS:
        raise MessageFormatError(f"unknown cloud layout {fields!r} (expected one of {CLOUD_LAYOUTS})")
    pts = np.asarray(points)
    if pts.ndim == 2:
        check_shape("points", pts.shape, (None, 3))
        h, w = 1, pts.shape[0]
    else:
        check_shape("points", pts.shape, (None, None, 3))
        h, w = pts.shape[0], pts.shape[1]
    grid = pts.shape[:-1]
    names = ["x", "y", "z"]
    cols = 3
    extra: np.ndarray | None = None
    if fields == "xyzi":
        if intensity is None:
            raise ShapeError("intensity: required for fields='xyzi'")
        extra = np.asarray(intensity)
        check_shape("intensity", extra.shape, grid)
        names.append("intensity")
    elif fields == "xyzrgb":
        if colors is None:
            raise ShapeError("colors: required for fields='xyzrgb'")
        col = np.asarray(colors)
        check_shape("colors", col.shape, (*grid, 3))
        extra = pack_rgb(col)
        names.append("rgb")
    if extra is not None:
        cols = 4
    if extra is None:
        arr = np.ascontiguousarray(pts, dtype=np.float32)
    else:
        arr = np.empty((*grid, cols), dtype=np.float32)
        for j in range(3):  # column by column: ~6x faster than arr[..., :3] = pts
            arr[..., j] = pts[..., j]
        arr[..., 3] = extra
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(h), int(w)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate(names)]
    msg.is_bigendian = _NATIVE_BIG
    msg.point_step = 4 * cols
    msg.row_step = 4 * cols * int(w)
    msg.is_dense = all(bool(np.isfinite(arr[..., j]).all()) for j in range(3))
    msg.data = arr.tobytes()
    return msg


# ---------------------------------------------------------------------------------------------------------------
# Image
# ---------------------------------------------------------------------------------------------------------------

# Named encodings of sensor_msgs/image_encodings that cv_bridge maps to an OpenCV type: (dtype, channels).
_NAMED_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "rgb16": (np.dtype(np.uint16), 3),
    "bgr16": (np.dtype(np.uint16), 3),
    "rgba16": (np.dtype(np.uint16), 4),
    "bgra16": (np.dtype(np.uint16), 4),
    "bayer_rggb8": (np.dtype(np.uint8), 1),
    "bayer_bggr8": (np.dtype(np.uint8), 1),
    "bayer_gbrg8": (np.dtype(np.uint8), 1),
    "bayer_grbg8": (np.dtype(np.uint8), 1),
    "bayer_rggb16": (np.dtype(np.uint16), 1),
    "bayer_bggr16": (np.dtype(np.uint16), 1),
    "bayer_gbrg16": (np.dtype(np.uint16), 1),
    "bayer_grbg16": (np.dtype(np.uint16), 1),
    "yuv422": (np.dtype(np.uint8), 2),
    "yuv422_yuy2": (np.dtype(np.uint8), 2),
}
_CV_DEPTHS: dict[str, np.dtype] = {
    "8U": np.dtype(np.uint8),
    "8S": np.dtype(np.int8),
    "16U": np.dtype(np.uint16),
    "16S": np.dtype(np.int16),
    "32S": np.dtype(np.int32),
    "32F": np.dtype(np.float32),
    "64F": np.dtype(np.float64),
}
_DTYPE_TO_CV = {dt: name for name, dt in _CV_DEPTHS.items()}
_GENERIC_RE = re.compile(r"(8U|8S|16U|16S|32S|32F|64F)(?:C([0-9]+))?")

DEPTH_ENCODINGS: tuple[str, ...] = ("16UC1", "mono16", "32FC1", "64FC1")
"""Encodings `image_to_depth_metres` reads (16-bit: millimetres; float: metres)."""

# Colour families, as cv_bridge's `getEncoding` (GRAY, RGB, BGR, RGBA, BGRA, YUV422, YUV422_YUY2, Bayer).
_FAMILY: dict[str, str] = {
    "mono8": "GRAY",
    "mono16": "GRAY",
    "rgb8": "RGB",
    "rgb16": "RGB",
    "bgr8": "BGR",
    "bgr16": "BGR",
    "rgba8": "RGBA",
    "rgba16": "RGBA",
    "bgra8": "BGRA",
    "bgra16": "BGRA",
    "yuv422": "YUV422",
    "yuv422_yuy2": "YUV422_YUY2",
    "bayer_rggb8": "BAYER_RGGB",
    "bayer_rggb16": "BAYER_RGGB",
    "bayer_bggr8": "BAYER_BGGR",
    "bayer_bggr16": "BAYER_BGGR",
    "bayer_gbrg8": "BAYER_GBRG",
    "bayer_gbrg16": "BAYER_GBRG",
    "bayer_grbg8": "BAYER_GRBG",
    "bayer_grbg16": "BAYER_GRBG",
}
_SAME_FORMAT = -1


def _colour_codes() -> dict[tuple[str, str], int]:
    codes = {
        ("GRAY", "RGB"): cv2.COLOR_GRAY2RGB,
        ("GRAY", "BGR"): cv2.COLOR_GRAY2BGR,
        ("GRAY", "RGBA"): cv2.COLOR_GRAY2RGBA,
        ("GRAY", "BGRA"): cv2.COLOR_GRAY2BGRA,
        ("RGB", "GRAY"): cv2.COLOR_RGB2GRAY,
        ("RGB", "BGR"): cv2.COLOR_RGB2BGR,
        ("RGB", "RGBA"): cv2.COLOR_RGB2RGBA,
        ("RGB", "BGRA"): cv2.COLOR_RGB2BGRA,
        ("BGR", "GRAY"): cv2.COLOR_BGR2GRAY,
        ("BGR", "RGB"): cv2.COLOR_BGR2RGB,
        ("BGR", "RGBA"): cv2.COLOR_BGR2RGBA,
        ("BGR", "BGRA"): cv2.COLOR_BGR2BGRA,
        ("RGBA", "GRAY"): cv2.COLOR_RGBA2GRAY,
        ("RGBA", "RGB"): cv2.COLOR_RGBA2RGB,
        ("RGBA", "BGR"): cv2.COLOR_RGBA2BGR,
        ("RGBA", "BGRA"): cv2.COLOR_RGBA2BGRA,
        ("BGRA", "GRAY"): cv2.COLOR_BGRA2GRAY,
        ("BGRA", "RGB"): cv2.COLOR_BGRA2RGB,
        ("BGRA", "BGR"): cv2.COLOR_BGRA2BGR,
        ("BGRA", "RGBA"): cv2.COLOR_BGRA2RGBA,
        ("YUV422", "GRAY"): cv2.COLOR_YUV2GRAY_UYVY,
        ("YUV422", "RGB"): cv2.COLOR_YUV2RGB_UYVY,
        ("YUV422", "BGR"): cv2.COLOR_YUV2BGR_UYVY,
        ("YUV422", "RGBA"): cv2.COLOR_YUV2RGBA_UYVY,
        ("YUV422", "BGRA"): cv2.COLOR_YUV2BGRA_UYVY,
        ("YUV422_YUY2", "GRAY"): cv2.COLOR_YUV2GRAY_YUY2,
        ("YUV422_YUY2", "RGB"): cv2.COLOR_YUV2RGB_YUY2,
        ("YUV422_YUY2", "BGR"): cv2.COLOR_YUV2BGR_YUY2,
        ("YUV422_YUY2", "RGBA"): cv2.COLOR_YUV2RGBA_YUY2,
        ("YUV422_YUY2", "BGRA"): cv2.COLOR_YUV2BGRA_YUY2,
        # ROS Bayer names describe the first row; OpenCV names the second (as cv_bridge maps them).
        ("BAYER_RGGB", "GRAY"): cv2.COLOR_BayerBG2GRAY,
        ("BAYER_RGGB", "RGB"): cv2.COLOR_BayerBG2RGB,
        ("BAYER_RGGB", "BGR"): cv2.COLOR_BayerBG2BGR,
        ("BAYER_BGGR", "GRAY"): cv2.COLOR_BayerRG2GRAY,
        ("BAYER_BGGR", "RGB"): cv2.COLOR_BayerRG2RGB,
        ("BAYER_BGGR", "BGR"): cv2.COLOR_BayerRG2BGR,
        ("BAYER_GBRG", "GRAY"): cv2.COLOR_BayerGR2GRAY,
        ("BAYER_GBRG", "RGB"): cv2.COLOR_BayerGR2RGB,
        ("BAYER_GBRG", "BGR"): cv2.COLOR_BayerGR2BGR,
        ("BAYER_GRBG", "GRAY"): cv2.COLOR_BayerGB2GRAY,
        ("BAYER_GRBG", "RGB"): cv2.COLOR_BayerGB2RGB,
        ("BAYER_GRBG", "BGR"): cv2.COLOR_BayerGB2BGR,
    }
    for fam in ("GRAY", "RGB", "BGR", "RGBA", "BGRA", "YUV422"):  # cv_bridge: identity for the first six
        codes[(fam, fam)] = _SAME_FORMAT
    return codes


_COLOUR_CODES = _colour_codes()


def encoding_to_dtype(encoding: str) -> tuple[np.dtype, int]:
    """Image encoding (cv_bridge names: "rgb8", "mono16", "32FC1", "8UC3", "16U", ...) -> (dtype, channels).

    Raises:
        MessageFormatError: unknown encoding.
    """
    if encoding in _NAMED_ENCODINGS:
        return _NAMED_ENCODINGS[encoding]
    m = _GENERIC_RE.fullmatch(encoding)
    if m is not None:
        channels = int(m.group(2)) if m.group(2) is not None else 1
        if channels >= 1:
            return _CV_DEPTHS[m.group(1)], channels
    raise MessageFormatError(
        f"unknown image encoding {encoding!r} (expected e.g. mono8, mono16, rgb8, bgr8, rgba8, bgra8, 16UC1, 32FC1)"
    )


def _is_colour(encoding: str) -> bool:
    return encoding in _FAMILY


def _bit_depth(encoding: str) -> int:
    return encoding_to_dtype(encoding)[0].itemsize * 8


def _conversion_codes(src: str, dst: str) -> list[int]:
    """cv_bridge `getConversionCode`: OpenCV colour codes, with _SAME_FORMAT meaning "change bit depth"."""
    src_channels = encoding_to_dtype(src)[1]
    dst_channels = encoding_to_dtype(dst)[1]
    if not _is_colour(src):
        if _is_colour(dst):
            raise MessageFormatError(
                f"[{src}] is not a color format but [{dst}] is: the conversion does not make sense"
            )
        if src_channels != dst_channels:
            raise MessageFormatError(f"[{src}] and [{dst}] do not have the same number of channels")
        return [_SAME_FORMAT]
    if not _is_colour(dst):
        if src_channels != dst_channels:
            raise MessageFormatError(
                f"[{src}] is a color format but [{dst}] is not, so they must have the same number of channels"
            )
        return [_SAME_FORMAT]
    key = (_FAMILY[src], _FAMILY[dst])
    if key not in _COLOUR_CODES:
        raise MessageFormatError(f"unsupported conversion from [{src}] to [{dst}]")
    codes = [_COLOUR_CODES[key]]
    if _bit_depth(src) != _bit_depth(dst) and _FAMILY[src] != _FAMILY[dst]:
        codes.append(_SAME_FORMAT)
    return codes


def _convert_depth(image: np.ndarray, src: str, dst: str) -> np.ndarray:
    """cv::Mat::convertTo to the dst encoding's depth, scaling 8 <-> 16 bit as cv_bridge does."""
    dst_dtype = encoding_to_dtype(dst)[0]
    src_bits, dst_bits = _bit_depth(src), _bit_depth(dst)
    scale = (
        65535.0 / 255.0
        if (src_bits, dst_bits) == (8, 16)
        else 255.0 / 65535.0
        if (src_bits, dst_bits) == (16, 8)
        else 1.0
    )
    if image.dtype == dst_dtype and scale == 1.0:
        return image
    if dst_dtype.kind == "f":
        return (image.astype(np.float64) * scale).astype(dst_dtype) if scale != 1.0 else image.astype(dst_dtype)
    info = np.iinfo(dst_dtype)
    values = image.astype(np.float64) * scale if scale != 1.0 else image.astype(np.float64)
    return np.clip(np.rint(np.nan_to_num(values, nan=0.0)), info.min, info.max).astype(dst_dtype)


def _convert_encoding(image: np.ndarray, src: str, dst: str) -> np.ndarray:
    out = image
    for code in _conversion_codes(src, dst):
        out = _convert_depth(out, src, dst) if code == _SAME_FORMAT else cv2.cvtColor(out, code)
    return out


def image_to_array(msg: Image, desired_encoding: str = "passthrough", *, copy: bool = False) -> np.ndarray:
    """Image -> numpy array, as `cv_bridge.CvBridge().imgmsg_to_cv2(msg, desired_encoding)`.

    Args:
        msg: the image; any row padding (`step`), either byte order.
        desired_encoding: "passthrough" (the message's own layout) or an encoding to convert to, e.g. "rgb8"
            from a "bgr8" / "bgra8" / "mono8" image (cv_bridge's colour and 8 <-> 16 bit rules).
        copy: always return a fresh array (otherwise a passthrough result may be a view of `msg.data`).

    Returns:
        (H, W) for one channel, else (H, W, C); dtype of the (desired) encoding, native byte order.

    Raises:
        MessageFormatError: unknown encoding, zero size, step < width*bytes, data shorter than height*step,
            or an impossible conversion.
    """
    encoding = str(msg.encoding)
    dtype, channels = encoding_to_dtype(encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MessageFormatError(f"Image ({encoding}) has zero size: width={w}, height={h}")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise MessageFormatError(
            f"Image step {step} < width*bytes per pixel ({w}*{channels * dtype.itemsize} = {row_bytes}) for {encoding}"
        )
    buf = _as_bytes_array(msg.data)
    if buf.size < h * step:
        raise MessageFormatError(f"Image data length {buf.size} < height*step ({h}*{step} = {h * step})")
    bigendian = bool(msg.is_bigendian) and dtype.itemsize > 1
    shape: tuple[int, ...] = (h, w) if channels == 1 else (h, w, channels)
    strides: tuple[int, ...] = (
        (step, dtype.itemsize) if channels == 1 else (step, channels * dtype.itemsize, dtype.itemsize)
    )
    image = np.ndarray(shape=shape, dtype=dtype.newbyteorder(">" if bigendian else "<"), buffer=buf, strides=strides)
    if bigendian != _NATIVE_BIG and dtype.itemsize > 1:
        image = image.astype(dtype)  # byte swap (copy), native order
    elif copy or step != row_bytes:
        image = np.array(image, dtype=dtype, order="C")
    if desired_encoding in ("passthrough", encoding):
        return image
    encoding_to_dtype(desired_encoding)  # unknown desired encoding -> MessageFormatError
    return _convert_encoding(image, encoding, desired_encoding)


def array_to_image(array: np.ndarray, encoding: str = "passthrough", header: Header | None = None) -> Image:
    """numpy array -> Image, as `cv_bridge.CvBridge().cv2_to_imgmsg(array, encoding, header)`.

    Args:
        array: (H, W) or (H, W, C), dtype uint8/int8/uint16/int16/int32/float32/float64.
        encoding: an encoding whose dtype and channel count match `array` ("rgb8" needs (H, W, 3) uint8),
            or "passthrough" for the generic name ("8UC3", "32FC1", ...).
        header: copied into the message (default: empty Header).

    Returns:
        Image with unpadded rows (step = W*C*itemsize) in native byte order.

    Raises:
        ShapeError: wrong rank, unsupported dtype, or dtype/channels that do not match `encoding`.
        MessageFormatError: unknown encoding.
    """
    arr = np.asarray(array)
    if arr.ndim not in (2, 3):
        raise ShapeError(f"image array: expected shape (H, W) or (H, W, C), got {arr.shape}")
    native = arr.dtype.newbyteorder("=")
    if native not in _DTYPE_TO_CV:
        raise ShapeError(f"image array: unsupported dtype {arr.dtype} (expected one of {sorted(_CV_DEPTHS)})")
    channels = 1 if arr.ndim == 2 else int(arr.shape[2])
    cv_type = f"{_DTYPE_TO_CV[native]}C{channels}"
    if encoding == "passthrough":
        encoding = cv_type
    else:
        dtype, want_channels = encoding_to_dtype(encoding)
        if dtype != native or want_channels != channels:
            raise ShapeError(f"encoding specified as {encoding}, but image has incompatible type {cv_type}")
    data = np.ascontiguousarray(arr, dtype=native)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = _NATIVE_BIG
    msg.step = int(arr.shape[1]) * channels * native.itemsize
    msg.data = data.tobytes()
    return msg


def image_to_depth_metres(msg: Image) -> np.ndarray:
    """Depth Image -> (H, W) float32 metres, camera optical frame, 0 = missing.

    16UC1 / mono16 are millimetres (0 = missing); 32FC1 / 64FC1 are metres (NaN, inf, <= 0 = missing).

    Raises:
        MessageFormatError: an encoding that is not a depth encoding (see `DEPTH_ENCODINGS`), or bad sizes.
    """
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise MessageFormatError(f"Image encoding {encoding!r} is not a depth encoding (expected {DEPTH_ENCODINGS})")
    raw = image_to_array(msg)
    if raw.dtype == np.uint16:
        return millimetres_to_metres(raw)
    return rep118_to_depth(raw)


def depth_metres_to_image(depth: np.ndarray, header: Header | None = None, encoding: str = "32FC1") -> Image:
    """(H, W) float metres (0 = missing) -> depth Image (REP 118).

    "32FC1": float32 metres with NaN for missing; "16UC1": uint16 millimetres with 0 for missing (clipped
    to 65.535 m).

    Raises:
        ShapeError: depth not 2-D.  MessageFormatError: another encoding.
    """
    d = np.asarray(depth)
    check_shape("depth", d.shape, ("H", "W"))
    if encoding == "32FC1":
        return array_to_image(depth_to_rep118(d), "32FC1", header)
    if encoding == "16UC1":
        return array_to_image(metres_to_millimetres_u16(d), "16UC1", header)
    raise MessageFormatError(f"depth image encoding must be '32FC1' or '16UC1', got {encoding!r}")


# ---------------------------------------------------------------------------------------------------------------
# CameraInfo
# ---------------------------------------------------------------------------------------------------------------

_MAX_COEFFS = {
    DistortionModel.PLUMB_BOB: 5,
    DistortionModel.RATIONAL_POLYNOMIAL: 8,
    DistortionModel.EQUIDISTANT: 4,
}


def camera_info_to_model(msg: CameraInfo, *, rectified: bool) -> CameraModel:
    """CameraInfo -> `CameraModel` (K, D, distortion model, R, P, binning, ROI).

    Args:
        msg: the calibration.  An empty `distortion_model` with no non-zero D is read as plumb_bob.
        rectified: True when the images it goes with are already rectified (image_rect: project with P),
            False for raw images (image_raw: project with K and D).

    Returns:
        CameraModel; binning 0 is stored as 1; an all-zero P is stored as None.

    Raises:
        CalibrationError: uncalibrated (K[0] == 0), zero image size, NaN/inf in K, D, R or P, an unknown
            distortion model or too many coefficients for it, `rectified` with an all-zero P, or K, P, R and the
            size that are not physical together (see `CameraModel`; the message names the field).  An all-zero
            R is read as the identity.
    """
    frame = getattr(getattr(msg, "header", None), "frame_id", "")
    where = f"CameraInfo (frame {frame!r})"
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    D = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    R = np.asarray(msg.r, dtype=np.float64).reshape(3, 3)
    P = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
    width, height = int(msg.width), int(msg.height)
    for name, value in (("K", K), ("D", D), ("R", R), ("P", P)):
        if not np.isfinite(value).all():
            raise CalibrationError(f"{where}: {name} contains NaN or inf: {value.reshape(-1).tolist()}")
    if K[0, 0] == 0:
        raise CalibrationError(f"{where} is uncalibrated: K[0] == 0 (run camera calibration or fix the driver)")
    if width <= 0 or height <= 0:
        raise CalibrationError(f"{where}: image size is {width}x{height}")
    name = str(msg.distortion_model)
    if name == "" and not D.any():
        model = DistortionModel.PLUMB_BOB
    else:
        try:
            model = DistortionModel(name)
        except ValueError:
            valid = [m.value for m in DistortionModel]
            raise CalibrationError(f"{where}: unknown distortion_model {name!r} (expected one of {valid})") from None
    if D.size > _MAX_COEFFS[model]:
        raise CalibrationError(
            f"{where}: {D.size} distortion coefficients for {model.value} (at most {_MAX_COEFFS[model]})"
        )
    has_p = bool(P.any())
    if rectified and (not has_p or P[0, 0] == 0):
        raise CalibrationError(f"{where}: rectified images need a projection matrix P, but P[0] == 0")
    if not R.any():  # drivers without rectification leave R all zero: identity (monocular)
        R = np.eye(3)
    try:
        return _camera_model(msg, K, D, model, R, P if has_p else None, rectified)
    except CalibrationError as exc:  # K, P, R or the size are non-physical: name the message too
        raise CalibrationError(f"{where}: {exc}") from None


def _camera_model(
    msg: CameraInfo, K: np.ndarray, D: np.ndarray, model: DistortionModel, R: np.ndarray, P: Any, rectified: bool
) -> CameraModel:
    width, height, roi = int(msg.width), int(msg.height), msg.roi
    return CameraModel(
        width=width,
        height=height,
        K=K,
        D=D,
        distortion_model=model,
        R=R,
        P=P,
        binning_x=max(1, int(msg.binning_x)),
        binning_y=max(1, int(msg.binning_y)),
        roi=(int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)),
        rectified=bool(rectified),
    )


def camera_model_to_camera_info(model: CameraModel, header: Header | None = None) -> CameraInfo:
    """`CameraModel` -> CameraInfo (P defaults to [K | 0] when the model has none; roi.do_rectify = False)."""
    K = np.asarray(model.K, dtype=np.float64).reshape(3, 3)
    P = np.asarray(model.P, dtype=np.float64).reshape(3, 4) if model.P is not None else np.hstack([K, np.zeros((3, 1))])
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(model.width), int(model.height)
    dist = model.distortion_model
    msg.distortion_model = dist.value if isinstance(dist, DistortionModel) else str(dist)
    msg.d = [float(v) for v in np.asarray(model.D, dtype=np.float64).reshape(-1)]
    msg.k = K.reshape(-1).tolist()
    msg.r = np.asarray(model.R, dtype=np.float64).reshape(-1).tolist()
    msg.p = P.reshape(-1).tolist()
    msg.binning_x, msg.binning_y = int(model.binning_x), int(model.binning_y)
    x, y, w, h = (int(v) for v in model.roi)
    msg.roi = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False)
    return msg
