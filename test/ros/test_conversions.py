"""Tests of depth_completion_ros.ros.conversions: PointCloud2, Image and CameraInfo <-> arrays.

Expected values come from a per-point `struct` reference codec written here, hand-computed numbers, and
(when importable) the upstream sensor_msgs_py.
"""

from __future__ import annotations

import copy
import math
import struct
from pathlib import Path

import numpy as np
import pytest

sensor_msgs = pytest.importorskip("sensor_msgs.msg")
from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from depth_completion_ros.core.camera import CameraModel, DistortionModel  # noqa: E402
from depth_completion_ros.core.errors import CalibrationError, MessageFormatError, ShapeError  # noqa: E402
from depth_completion_ros.ros import compat  # noqa: E402
from depth_completion_ros.ros import conversions as conv  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------
# Reference PointCloud2 codec: one struct.pack_into / unpack_from per value.
# ---------------------------------------------------------------------------------------------------------------

STRUCT_CHAR = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
NP_TYPE = {1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32, 6: np.uint32, 7: np.float32, 8: np.float64}
ALL_DATATYPES = list(STRUCT_CHAR)


def subfields(layout):
    """[(sub-name, offset, datatype)] as sensor_msgs_py names them."""
    out = []
    for i, (name, offset, datatype, count) in enumerate(layout):
        base = name or f"unnamed_field_{i}"
        size = struct.calcsize(STRUCT_CHAR[datatype])
        out.extend((f"{base}_{k}" if count > 1 else base, offset + k * size, datatype) for k in range(count))
    return out


def random_values(layout, n, rng):
    """{sub-name: (n,) array of the field's type}."""
    vals = {}
    for name, _, dt in subfields(layout):
        t = NP_TYPE[dt]
        if np.issubdtype(t, np.floating):
            vals[name] = (rng.normal(size=n) * 50).astype(t)
        else:
            info = np.iinfo(t)
            vals[name] = rng.integers(info.min, int(info.max) + 1, size=n, dtype=np.int64).astype(t)
    return vals


def make_cloud(layout, point_step, values, *, height, width, row_pad=0, big=False, is_dense=False):
    """Encode a PointCloud2 point by point with struct (the reference encoder)."""
    row_step = point_step * width + row_pad
    data = bytearray(b"\xab" * (row_step * height))  # padding bytes are garbage on purpose
    endian = ">" if big else "<"
    for name, off, dt in subfields(layout):
        fmt = endian + STRUCT_CHAR[dt]
        col = values[name]
        for idx in range(height * width):
            r, c = divmod(idx, width)
            struct.pack_into(fmt, data, r * row_step + c * point_step + off, col[idx].item())
    msg = PointCloud2()
    msg.header = Header(frame_id="lidar")
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in layout]
    msg.is_bigendian = big
    msg.point_step, msg.row_step = point_step, row_step
    msg.is_dense = is_dense
    msg.data = bytes(data)
    return msg


def ref_decode(msg, names):
    """Per-point struct decode of the named sub-fields -> list of tuples (row-major)."""
    table = {n: (o, d) for n, o, d in subfields([(f.name, f.offset, f.datatype, f.count) for f in msg.fields])}
    data = bytes(msg.data)
    endian = ">" if msg.is_bigendian else "<"
    rows = []
    for r in range(msg.height):
        for c in range(msg.width):
            base = r * msg.row_step + c * msg.point_step
            rows.append(
                tuple(struct.unpack_from(endian + STRUCT_CHAR[table[n][1]], data, base + table[n][0])[0] for n in names)
            )
    return rows


def same_values(a, b):
    """Element-wise equality where NaN == NaN."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


# A layout with every datatype, count > 1, shuffled order, an empty name, and padding (point_step > fields).
MIXED_LAYOUT = [
    ("intensity", 0, 7, 1),  # float32
    ("z", 4, 8, 1),  # float64
    ("ring", 12, 4, 1),  # uint16
    ("x", 16, 7, 1),  # float32
    ("flags", 20, 1, 3),  # int8 x3 -> flags_0..2
    ("tag", 23, 2, 1),  # uint8
    ("y", 24, 5, 1),  # int32 (cast to float32 in xyz)
    ("t", 28, 6, 1),  # uint32
    ("", 32, 3, 2),  # int16 x2 -> unnamed_field_8_0, _1
]
MIXED_STEP = 48


class TestPointCloud2ToStructured:
    @pytest.mark.parametrize("big", [False, True])
    @pytest.mark.parametrize("organized", [False, True])
    def test_matches_reference(self, rng, big, organized):
        h, w = (3, 5) if organized else (1, 11)
        vals = random_values(MIXED_LAYOUT, h * w, rng)
        msg = make_cloud(MIXED_LAYOUT, MIXED_STEP, vals, height=h, width=w, row_pad=7 if organized else 0, big=big)
        pts = conv.pointcloud2_to_structured(msg)
        names = [n for n, _, _ in subfields(MIXED_LAYOUT)]
        assert list(pts.dtype.names) == names
        assert pts.shape == (h * w,)
        ref = ref_decode(msg, names)
        for j, name in enumerate(names):
            assert pts.dtype[name] == np.dtype(NP_TYPE[dict((n, d) for n, _, d in subfields(MIXED_LAYOUT))[name]])
            assert pts.dtype[name].isnative
            assert same_values(pts[name], [row[j] for row in ref]), name
            assert same_values(pts[name], vals[name]), name
        grid = conv.pointcloud2_to_structured(msg, organized=True)
        assert grid.shape == (h, w)
        assert same_values(grid["x"].reshape(-1), vals["x"])

    @pytest.mark.parametrize("datatype", ALL_DATATYPES)
    def test_each_datatype_round_trips(self, rng, datatype):
        size = struct.calcsize(STRUCT_CHAR[datatype])
        layout = [
            ("x", 0, datatype, 1),
            ("y", size, datatype, 1),
            ("z", 2 * size, datatype, 1),
            ("v", 3 * size, datatype, 2),
        ]
        vals = random_values(layout, 9, rng)
        for big in (False, True):
            msg = make_cloud(layout, 5 * size + 3, vals, height=1, width=9, big=big)
            pts = conv.pointcloud2_to_structured(msg)
            for name in ("x", "y", "z", "v_0", "v_1"):
                assert pts[name].dtype == NP_TYPE[datatype]
                assert np.array_equal(pts[name], vals[name])
            xyz = conv.pointcloud2_to_xyz(msg, skip_nans=False)
            expected = np.stack([vals[n].astype(np.float32) for n in ("x", "y", "z")], axis=1)
            assert xyz.dtype == np.float32
            assert np.array_equal(xyz, expected)

    def test_zero_copy_view_when_native_and_unpadded(self, rng):
        layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]
        msg = make_cloud(layout, 16, random_values(layout, 4, rng), height=1, width=4)
        pts = conv.pointcloud2_to_structured(msg)
        assert np.shares_memory(pts, np.frombuffer(msg.data, dtype=np.uint8))

    def test_empty_cloud(self):
        msg = conv.xyz_to_pointcloud2(np.zeros((0, 3), np.float32), Header())
        assert conv.pointcloud2_to_structured(msg).shape == (0,)
        assert conv.pointcloud2_to_xyz(msg).shape == (0, 3)

    def test_field_names(self):
        msg = make_cloud(
            MIXED_LAYOUT, MIXED_STEP, random_values(MIXED_LAYOUT, 1, np.random.default_rng(0)), height=1, width=1
        )
        assert conv.cloud_field_names(msg) == [n for n, _, _ in subfields(MIXED_LAYOUT)]


class TestPointCloud2ToXyz:
    @pytest.mark.parametrize("big", [False, True])
    def test_mixed_layout_with_row_padding(self, rng, big):
        vals = random_values(MIXED_LAYOUT, 12, rng)
        msg = make_cloud(MIXED_LAYOUT, MIXED_STEP, vals, height=3, width=4, row_pad=5, big=big)
        xyz = conv.pointcloud2_to_xyz(msg)
        ref = np.array(ref_decode(msg, ["x", "y", "z"]), dtype=np.float64).astype(np.float32)
        assert xyz.shape == (12, 3) and xyz.dtype == np.float32 and xyz.flags.c_contiguous
        assert np.array_equal(xyz, ref)
        sel = conv.pointcloud2_to_xyz(msg, fields=("t", "flags_2", "unnamed_field_8_1"))
        ref_sel = np.array(ref_decode(msg, ["t", "flags_2", "unnamed_field_8_1"]), dtype=np.float64).astype(np.float32)
        assert np.array_equal(sel, ref_sel)

    @pytest.mark.parametrize("point_step", [12, 16, 32])
    def test_float32_fast_path_any_field_order(self, rng, point_step):
        layout = [("z", 0, 7, 1), ("x", 4, 7, 1), ("y", 8, 7, 1)]
        vals = random_values(layout, 50, rng)
        msg = make_cloud(layout, point_step, vals, height=5, width=10)
        xyz = conv.pointcloud2_to_xyz(msg)
        assert np.array_equal(xyz, np.stack([vals["x"], vals["y"], vals["z"]], axis=1))
        assert np.array_equal(conv.pointcloud2_to_xyz(msg).reshape(5, 10, 3)[2, 3], xyz[23])

    def test_skip_nans_semantics(self, rng):
        layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1)]
        vals = random_values(layout, 8, rng)
        vals["x"][1] = np.nan
        vals["z"][3] = np.nan
        vals["y"][4] = np.inf  # inf is kept, as upstream (it checks isnan only)
        vals["intensity"][5] = np.nan  # not a selected field -> kept for xyz
        msg = make_cloud(layout, 16, vals, height=2, width=4, is_dense=False)
        full = np.stack([vals[n] for n in ("x", "y", "z")], axis=1)
        kept = [0, 2, 4, 5, 6, 7]
        assert same_values(conv.pointcloud2_to_xyz(msg, skip_nans=True), full[kept])
        assert same_values(conv.pointcloud2_to_xyz(msg, skip_nans=False), full)
        with_i = conv.pointcloud2_to_xyz(msg, fields=("x", "y", "z", "intensity"))
        assert with_i.shape == (5, 4)
        # is_dense=True: upstream does not filter, neither do we.
        msg.is_dense = True
        assert same_values(conv.pointcloud2_to_xyz(msg, skip_nans=True), full)

    def test_skip_nans_on_generic_path(self, rng):
        vals = random_values(MIXED_LAYOUT, 6, rng)
        vals["z"][2] = np.nan  # float64 NaN
        msg = make_cloud(MIXED_LAYOUT, MIXED_STEP, vals, height=1, width=6, big=True)
        out = conv.pointcloud2_to_xyz(msg)
        assert out.shape == (5, 3)
        assert np.array_equal(out[:, 2], np.delete(vals["z"], 2).astype(np.float32))


class TestXyzToPointCloud2:
    def test_xyz_round_trip_and_header(self, rng):
        pts = rng.normal(size=(20, 3)).astype(np.float32)
        header = Header(frame_id="velo", stamp=Time(sec=12, nanosec=345))
        msg = conv.xyz_to_pointcloud2(pts, header)
        assert msg.header.frame_id == "velo" and msg.header.stamp.sec == 12 and msg.header.stamp.nanosec == 345
        assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 20, 12, 240)
        assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
            ("x", 0, 7, 1),
            ("y", 4, 7, 1),
            ("z", 8, 7, 1),
        ]
        assert msg.is_dense and not msg.is_bigendian
        assert np.array_equal(np.array(ref_decode(msg, ["x", "y", "z"]), np.float32), pts)
        assert np.array_equal(conv.pointcloud2_to_xyz(msg), pts)

    def test_xyzi_organized_with_nans(self, rng):
        pts = rng.normal(size=(4, 6, 3)).astype(np.float64)
        pts[1, 2] = np.nan
        inten = rng.random((4, 6))
        msg = conv.xyz_to_pointcloud2(pts, Header(), fields="xyzi", intensity=inten)
        assert (msg.height, msg.width, msg.point_step) == (4, 6, 16)
        assert not msg.is_dense
        ref = np.array(ref_decode(msg, ["x", "y", "z", "intensity"]), dtype=np.float32)
        expected = np.concatenate([pts, inten[..., None]], axis=-1).reshape(-1, 4).astype(np.float32)
        assert same_values(ref, expected)
        assert conv.pointcloud2_to_xyz(msg).shape == (23, 3)
        assert same_values(conv.pointcloud2_to_xyz(msg, skip_nans=False, fields=("intensity",))[:, 0], expected[:, 3])

    def test_xyzrgb_packing(self):
        pts = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
        colors = np.array([[255, 128, 1], [0, 0, 0]], np.uint8)
        msg = conv.xyz_to_pointcloud2(pts, Header(), fields="xyzrgb", colors=colors)
        assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
        # Hand-computed: 0x00FF8001, read back as a little-endian uint32 at offset 12.
        assert struct.unpack_from("<I", bytes(msg.data), 12)[0] == 0x00FF8001
        assert struct.unpack_from("<I", bytes(msg.data), 28)[0] == 0
        rgb = conv.pointcloud2_to_structured(msg)["rgb"]
        assert np.array_equal(conv.unpack_rgb(rgb), colors)
        assert not np.isnan(rgb).any()  # alpha 0: never a NaN float

    def test_pack_unpack_rgb_round_trip(self, rng):
        colors = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
        packed = conv.pack_rgb(colors)
        assert packed.dtype == np.float32 and packed.shape == (7, 5)
        assert np.array_equal(conv.unpack_rgb(packed), colors)

    def test_bad_inputs(self, rng):
        with pytest.raises(ShapeError, match="points"):
            conv.xyz_to_pointcloud2(np.zeros((5, 2)), Header())
        with pytest.raises(ShapeError, match="intensity"):
            conv.xyz_to_pointcloud2(np.zeros((5, 3)), Header(), fields="xyzi")
        with pytest.raises(ShapeError, match="intensity"):
            conv.xyz_to_pointcloud2(np.zeros((5, 3)), Header(), fields="xyzi", intensity=np.zeros(4))
        with pytest.raises(ShapeError, match="colors"):
            conv.xyz_to_pointcloud2(np.zeros((5, 3)), Header(), fields="xyzrgb", colors=np.zeros((5, 4), np.uint8))
        with pytest.raises(MessageFormatError, match="unknown cloud layout"):
            conv.xyz_to_pointcloud2(np.zeros((5, 3)), Header(), fields="xyzn")


class TestPointCloud2Errors:
    def _cloud(self, rng):
        layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]
        return make_cloud(layout, 16, random_values(layout, 6, rng), height=2, width=3)

    def test_missing_xyz(self, rng):
        layout = [("a", 0, 7, 1), ("b", 4, 7, 1)]
        msg = make_cloud(layout, 8, random_values(layout, 3, rng), height=1, width=3)
        with pytest.raises(MessageFormatError, match=r"no field\(s\) \['x', 'y', 'z'\]"):
            conv.pointcloud2_to_xyz(msg)

    def test_data_length_mismatch(self, rng):
        msg = self._cloud(rng)
        msg.data = bytes(msg.data)[:-1]
        with pytest.raises(MessageFormatError, match=r"data length 95 != row_step\*height"):
            conv.pointcloud2_to_xyz(msg)
        with pytest.raises(MessageFormatError, match="data length"):
            conv.pointcloud2_to_structured(msg)

    def test_width_too_large_for_row_step(self, rng):
        msg = self._cloud(rng)
        msg.width, msg.height = 4, 1  # 4*16 > row_step 48
        with pytest.raises(MessageFormatError, match=r"point_step\*width .* > row_step"):
            conv.pointcloud2_to_xyz(msg)

    def test_point_step_smaller_than_fields(self, rng):
        msg = self._cloud(rng)
        msg.point_step = 8
        msg.row_step = 24
        msg.data = bytes(48)
        with pytest.raises(
            MessageFormatError, match="point_step 8 is smaller than the fields: field 'z' ends at byte 12"
        ):
            conv.pointcloud2_to_xyz(msg)

    def test_unknown_datatype_count_zero_duplicates(self, rng):
        msg = self._cloud(rng)
        msg.fields = [PointField(name="x", offset=0, datatype=9, count=1)]
        with pytest.raises(MessageFormatError, match="unknown datatype 9"):
            conv.pointcloud2_to_structured(msg)
        msg.fields = [PointField(name="x", offset=0, datatype=7, count=0)]
        with pytest.raises(MessageFormatError, match="count 0"):
            conv.pointcloud2_to_structured(msg)
        msg.fields = [
            PointField(name="x", offset=0, datatype=7, count=1),
            PointField(name="x", offset=4, datatype=7, count=1),
        ]
        with pytest.raises(MessageFormatError, match="duplicate field name 'x'"):
            conv.pointcloud2_to_structured(msg)

    def test_zero_point_step(self, rng):
        msg = self._cloud(rng)
        msg.point_step = 0
        with pytest.raises(MessageFormatError, match="point_step is 0"):
            conv.pointcloud2_to_xyz(msg)


# ---------------------------------------------------------------------------------------------------------------
# Image
# ---------------------------------------------------------------------------------------------------------------

ENCODINGS = {
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "rgb16": (np.uint16, 3),
    "bgra16": (np.uint16, 4),
    "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3),
    "8SC2": (np.int8, 2),
    "16SC1": (np.int16, 1),
    "32SC1": (np.int32, 1),
    "64FC1": (np.float64, 1),
    "32FC3": (np.float32, 3),
    "16U": (np.uint16, 1),
    "bayer_rggb8": (np.uint8, 1),
    "bayer_grbg16": (np.uint16, 1),
    "yuv422": (np.uint8, 2),
}


def random_image(rng, dtype, channels, h=5, w=7):
    shape = (h, w) if channels == 1 else (h, w, channels)
    if np.issubdtype(dtype, np.floating):
        return (rng.normal(size=shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=np.int64).astype(dtype)


def encode_image(arr, encoding, *, pad=0, big=False):
    """Reference encoder: rows of explicit byte order, each followed by `pad` garbage bytes."""
    arr = np.asarray(arr)
    ordered = arr.astype(arr.dtype.newbyteorder(">" if big else "<"))
    rows = [ordered[r].tobytes() + b"\x5a" * pad for r in range(arr.shape[0])]
    msg = Image()
    msg.header = Header(frame_id="cam", stamp=Time(sec=7, nanosec=8))
    msg.height, msg.width = arr.shape[0], arr.shape[1]
    msg.encoding = encoding
    msg.is_bigendian = big
    msg.step = len(rows[0])
    msg.data = b"".join(rows)
    return msg


class TestImageToArray:
    @pytest.mark.parametrize("encoding", list(ENCODINGS))
    @pytest.mark.parametrize(("pad", "big"), [(0, False), (3, False), (0, True), (5, True)])
    def test_decode_matches_reference(self, rng, encoding, pad, big):
        dtype, channels = ENCODINGS[encoding]
        arr = random_image(rng, dtype, channels)
        msg = encode_image(arr, encoding, pad=pad, big=big)
        out = conv.image_to_array(msg)
        assert out.dtype == np.dtype(dtype) and out.dtype.isnative
        assert out.shape == arr.shape
        assert np.array_equal(out, arr)
        assert conv.encoding_to_dtype(encoding) == (np.dtype(dtype), channels)

    @pytest.mark.parametrize("encoding", list(ENCODINGS))
    def test_array_to_image_round_trip_keeps_header(self, rng, encoding):
        dtype, channels = ENCODINGS[encoding]
        arr = random_image(rng, dtype, channels)
        header = Header(frame_id="camera_optical", stamp=Time(sec=1, nanosec=2))
        msg = conv.array_to_image(arr, encoding, header)
        assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 2
        assert msg.encoding == encoding
        assert msg.step == arr.shape[1] * channels * np.dtype(dtype).itemsize
        assert len(msg.data) == msg.step * msg.height
        assert np.array_equal(conv.image_to_array(msg), arr)

    def test_passthrough_encoding_names(self, rng):
        assert conv.array_to_image(np.zeros((2, 3), np.float32)).encoding == "32FC1"
        assert conv.array_to_image(np.zeros((2, 3, 3), np.uint8)).encoding == "8UC3"
        assert conv.array_to_image(np.zeros((2, 3, 2), np.int16)).encoding == "16SC2"
        big = np.arange(6, dtype=">u2").reshape(2, 3)
        msg = conv.array_to_image(big, "mono16")
        assert np.array_equal(conv.image_to_array(msg), np.arange(6).reshape(2, 3))

    def test_view_and_copy(self, rng):
        arr = random_image(rng, np.uint8, 3)
        msg = conv.array_to_image(arr, "rgb8")
        buf = np.frombuffer(msg.data, dtype=np.uint8)
        assert np.shares_memory(conv.image_to_array(msg), buf)
        assert not np.shares_memory(conv.image_to_array(msg, copy=True), buf)

    def test_colour_conversions_like_cv_bridge(self, rng):
        rgb = random_image(rng, np.uint8, 3)
        bgr_msg = conv.array_to_image(rgb[..., ::-1], "bgr8")
        assert np.array_equal(conv.image_to_array(bgr_msg, "rgb8"), rgb)
        assert np.array_equal(conv.image_to_array(bgr_msg, "bgr8"), rgb[..., ::-1])
        alpha = rng.integers(0, 256, size=(*rgb.shape[:2], 1), dtype=np.uint8)
        bgra_msg = conv.array_to_image(np.concatenate([rgb[..., ::-1], alpha], axis=-1), "bgra8")
        assert np.array_equal(conv.image_to_array(bgra_msg, "rgb8"), rgb)
        rgba = conv.image_to_array(conv.array_to_image(rgb, "rgb8"), "rgba8")
        assert np.array_equal(rgba[..., :3], rgb) and np.all(rgba[..., 3] == 255)
        gray = random_image(rng, np.uint8, 1)
        assert np.array_equal(conv.image_to_array(conv.array_to_image(gray, "mono8"), "rgb8"), np.stack([gray] * 3, -1))
        # RGB -> gray with the ITU-R 601 weights, within OpenCV's fixed-point rounding.
        mono = conv.image_to_array(conv.array_to_image(rgb, "rgb8"), "mono8").astype(np.float64)
        ref = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        assert mono.shape == rgb.shape[:2] and np.max(np.abs(mono - ref)) <= 1.0

    def test_bit_depth_conversions_like_cv_bridge(self, rng):
        m16 = random_image(rng, np.uint16, 1)
        out8 = conv.image_to_array(conv.array_to_image(m16, "mono16"), "mono8")
        expected = np.array([[round(v * 255 / 65535) for v in row] for row in m16.tolist()], dtype=np.uint8)
        assert out8.dtype == np.uint8 and np.array_equal(out8, expected)
        m8 = random_image(rng, np.uint8, 1)
        assert np.array_equal(
            conv.image_to_array(conv.array_to_image(m8, "mono8"), "mono16"), m8.astype(np.uint16) * 257
        )
        # Colour and depth change: bgr16 -> rgb8 (swap, then scale).
        rgb16 = random_image(rng, np.uint16, 3)
        out = conv.image_to_array(conv.array_to_image(rgb16[..., ::-1], "bgr16"), "rgb8")
        assert np.max(np.abs(out.astype(np.int64) - np.rint(rgb16 * (255 / 65535)).astype(np.int64))) == 0
        # Non-colour encodings convert element-wise without scaling: 16UC1 -> 32FC1.
        assert np.array_equal(conv.image_to_array(conv.array_to_image(m16, "16UC1"), "32FC1"), m16.astype(np.float32))

    def test_bayer_and_yuv_to_rgb(self):
        flat = np.full((4, 6), 100, np.uint8)
        out = conv.image_to_array(conv.array_to_image(flat, "bayer_rggb8"), "rgb8")
        assert out.shape == (4, 6, 3) and np.all(out == 100)
        uyvy = np.zeros((2, 4, 2), np.uint8)
        uyvy[..., 0] = 128  # U, V neutral
        uyvy[..., 1] = 81  # Y
        gray = conv.image_to_array(conv.array_to_image(uyvy, "yuv422"), "mono8")
        assert gray.shape == (2, 4) and np.all(gray == 81)

    def test_impossible_conversions(self, rng):
        msg = conv.array_to_image(random_image(rng, np.uint8, 3), "8UC3")
        with pytest.raises(MessageFormatError, match=r"\[8UC3\] is not a color format"):
            conv.image_to_array(msg, "rgb8")
        depth = conv.array_to_image(random_image(rng, np.float32, 1), "32FC1")
        with pytest.raises(MessageFormatError, match="not a color format"):
            conv.image_to_array(depth, "mono8")
        rgb = conv.array_to_image(random_image(rng, np.uint8, 3), "rgb8")
        with pytest.raises(MessageFormatError, match="same number of channels"):
            conv.image_to_array(rgb, "32FC1")
        with pytest.raises(MessageFormatError, match="unsupported conversion"):
            conv.image_to_array(rgb, "bayer_rggb8")
        with pytest.raises(MessageFormatError, match="unknown image encoding 'rgb9'"):
            conv.image_to_array(rgb, "rgb9")

    def test_bad_messages(self, rng):
        msg = encode_image(random_image(rng, np.uint16, 1), "16UC1")
        bad = copy.deepcopy(msg)
        bad.encoding = "depth_mm"
        with pytest.raises(MessageFormatError, match="unknown image encoding 'depth_mm'"):
            conv.image_to_array(bad)
        bad = copy.deepcopy(msg)
        bad.width = 0
        with pytest.raises(MessageFormatError, match="zero size: width=0"):
            conv.image_to_array(bad)
        bad = copy.deepcopy(msg)
        bad.step = 13  # < 7 * 2
        with pytest.raises(MessageFormatError, match=r"step 13 < width\*bytes per pixel"):
            conv.image_to_array(bad)
        bad = copy.deepcopy(msg)
        bad.data = bytes(msg.data)[:-1]
        with pytest.raises(MessageFormatError, match=r"data length 69 < height\*step"):
            conv.image_to_array(bad)

    def test_array_to_image_type_checks(self):
        with pytest.raises(ShapeError, match="encoding specified as rgb8, but image has incompatible type 8UC4"):
            conv.array_to_image(np.zeros((2, 2, 4), np.uint8), "rgb8")
        with pytest.raises(ShapeError, match="incompatible type 32FC1"):
            conv.array_to_image(np.zeros((2, 2), np.float32), "16UC1")
        with pytest.raises(ShapeError, match="unsupported dtype"):
            conv.array_to_image(np.zeros((2, 2), np.int64), "passthrough")
        with pytest.raises(ShapeError, match=r"\(H, W\) or \(H, W, C\)"):
            conv.array_to_image(np.zeros(4, np.uint8), "mono8")
        with pytest.raises(MessageFormatError, match="unknown image encoding"):
            conv.array_to_image(np.zeros((2, 2), np.uint8), "grey")


class TestDepthImages:
    def test_16uc1_millimetres(self):
        mm = np.array([[0, 1500], [65535, 1]], np.uint16)
        for enc in ("16UC1", "mono16"):
            depth = conv.image_to_depth_metres(encode_image(mm, enc, pad=2, big=True))
            assert depth.dtype == np.float32
            assert np.allclose(depth, [[0.0, 1.5], [65.535, 0.001]], rtol=1e-7, atol=1e-9)

    def test_32fc1_metres_invalid_to_zero(self):
        m = np.array([[np.nan, 2.5, np.inf], [-1.0, 0.0, 0.25]], np.float32)
        depth = conv.image_to_depth_metres(encode_image(m, "32FC1"))
        assert np.array_equal(depth, np.array([[0, 2.5, 0], [0, 0, 0.25]], np.float32))

    def test_write_rep118(self):
        depth = np.array([[0.0, 1.25], [3.0, 0.0]], np.float32)
        header = Header(frame_id="cam")
        msg = conv.depth_metres_to_image(depth, header)
        assert msg.encoding == "32FC1" and msg.header.frame_id == "cam"
        values = struct.unpack("<4f", bytes(msg.data))
        assert math.isnan(values[0]) and values[1] == 1.25 and values[2] == 3.0 and math.isnan(values[3])
        assert np.array_equal(conv.image_to_depth_metres(msg), depth)
        msg16 = conv.depth_metres_to_image(depth, header, encoding="16UC1")
        assert struct.unpack("<4H", bytes(msg16.data)) == (0, 1250, 3000, 0)

    def test_errors(self, rng):
        with pytest.raises(MessageFormatError, match="not a depth encoding"):
            conv.image_to_depth_metres(conv.array_to_image(random_image(rng, np.uint8, 3), "rgb8"))
        with pytest.raises(ShapeError, match="depth"):
            conv.depth_metres_to_image(np.zeros((2, 2, 1), np.float32), Header())
        with pytest.raises(MessageFormatError, match="'32FC1' or '16UC1'"):
            conv.depth_metres_to_image(np.zeros((2, 2), np.float32), Header(), encoding="mono8")


# ---------------------------------------------------------------------------------------------------------------
# CameraInfo
# ---------------------------------------------------------------------------------------------------------------


def make_info(model="plumb_bob", d=(0.1, -0.2, 0.001, 0.002, 0.05)):
    msg = CameraInfo()
    msg.header = Header(frame_id="cam_optical")
    msg.width, msg.height = 1242, 375
    msg.distortion_model = model
    msg.d = list(d)
    msg.k = [721.5, 0.0, 609.5, 0.0, 721.5, 172.8, 0.0, 0.0, 1.0]
    msg.r = [0.9999, -0.0098, 0.0074, 0.0098, 0.9999, -0.0043, -0.0074, 0.0044, 1.0]
    msg.p = [707.0, 0.0, 604.0, -379.8, 0.0, 707.0, 180.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.binning_x, msg.binning_y = 0, 2
    msg.roi = RegionOfInterest(x_offset=10, y_offset=20, width=600, height=300, do_rectify=True)
    return msg


class TestCameraInfo:
    @pytest.mark.parametrize(
        ("model", "d"),
        [
            ("plumb_bob", (0.1, -0.2, 0.001, 0.002, 0.05)),
            ("rational_polynomial", (0.1, -0.2, 0.001, 0.002, 0.05, 0.01, 0.02, 0.03)),
            ("equidistant", (0.1, -0.02, 0.003, -0.0004)),
        ],
    )
    def test_fields(self, model, d):
        msg = make_info(model, d)
        cam = conv.camera_info_to_model(msg, rectified=False)
        assert isinstance(cam, CameraModel)
        assert (cam.width, cam.height) == (1242, 375)
        assert cam.K.shape == (3, 3) and cam.K[0, 0] == 721.5 and cam.K[1, 2] == 172.8 and cam.K[2, 2] == 1.0
        assert np.array_equal(cam.D, np.array(d))
        assert cam.distortion_model == DistortionModel(model)
        assert cam.R.shape == (3, 3) and cam.R[0, 1] == -0.0098 and cam.R[2, 0] == -0.0074
        assert cam.P.shape == (3, 4) and cam.P[0, 3] == -379.8 and cam.P[1, 2] == 180.5
        assert (cam.binning_x, cam.binning_y) == (1, 2)
        assert cam.roi == (10, 20, 600, 300)
        assert cam.rectified is False
        assert conv.camera_info_to_model(msg, rectified=True).rectified is True

    def test_round_trip(self):
        msg = make_info()
        cam = conv.camera_info_to_model(msg, rectified=True)
        back = conv.camera_model_to_camera_info(cam, Header(frame_id="cam_optical"))
        assert back.header.frame_id == "cam_optical"
        assert (back.width, back.height, back.distortion_model) == (1242, 375, "plumb_bob")
        assert list(back.d) == list(msg.d) and list(back.k) == list(msg.k)
        assert list(back.r) == list(msg.r) and list(back.p) == list(msg.p)
        assert (back.binning_x, back.binning_y) == (1, 2)
        assert (back.roi.x_offset, back.roi.y_offset, back.roi.width, back.roi.height) == (10, 20, 600, 300)
        again = conv.camera_info_to_model(back, rectified=True)
        assert np.array_equal(again.P, cam.P) and np.array_equal(again.K, cam.K)

    def test_model_without_p_gets_k_zero(self):
        K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
        info = conv.camera_model_to_camera_info(CameraModel(width=640, height=480, K=K))
        assert list(info.p) == [500.0, 0, 320, 0, 0, 500.0, 240, 0, 0, 0, 1, 0]
        assert info.distortion_model == "plumb_bob" and list(info.d) == []

    def test_empty_distortion_model_is_plumb_bob(self):
        msg = make_info("", ())
        cam = conv.camera_info_to_model(msg, rectified=False)
        assert cam.distortion_model == DistortionModel.PLUMB_BOB and cam.D.size == 0

    def test_uncalibrated(self):
        msg = CameraInfo()
        msg.header = Header(frame_id="cam")
        msg.width, msg.height = 640, 480
        with pytest.raises(CalibrationError, match=r"uncalibrated: K\[0\] == 0"):
            conv.camera_info_to_model(msg, rectified=False)

    @pytest.mark.parametrize("attr", ["d", "k", "p", "r"])
    def test_nan(self, attr):
        msg = make_info()
        values = list(getattr(msg, attr))
        values[1] = float("nan")
        setattr(msg, attr, values)
        with pytest.raises(CalibrationError, match=f"{attr.upper()} contains NaN"):
            conv.camera_info_to_model(msg, rectified=False)

    def test_other_errors(self):
        msg = make_info("fov", (0.1,))
        with pytest.raises(CalibrationError, match="unknown distortion_model 'fov'"):
            conv.camera_info_to_model(msg, rectified=False)
        msg = make_info("equidistant", (0.1, 0.2, 0.3, 0.4, 0.5))
        with pytest.raises(CalibrationError, match="5 distortion coefficients for equidistant"):
            conv.camera_info_to_model(msg, rectified=False)
        msg = make_info()
        msg.p = [0.0] * 12
        assert conv.camera_info_to_model(msg, rectified=False).P is None
        with pytest.raises(CalibrationError, match="need a projection matrix P"):
            conv.camera_info_to_model(msg, rectified=True)
        msg = make_info()
        msg.width = 0
        with pytest.raises(CalibrationError, match="image size is 0x375"):
            conv.camera_info_to_model(msg, rectified=False)


# ---------------------------------------------------------------------------------------------------------------
# Real data: the Luminar ROS 1 bag (extra fields, padding)
# ---------------------------------------------------------------------------------------------------------------


def _read_luminar(bag: Path, limit: int = 2):
    rosbags_highlevel = pytest.importorskip("rosbags.highlevel")
    typesys = pytest.importorskip("rosbags.typesys")
    store = typesys.get_typestore(typesys.Stores.ROS1_NOETIC)
    out = []
    with rosbags_highlevel.AnyReader([bag], default_typestore=store) as reader:
        conns = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/PointCloud2"]
        for con, _, raw in reader.messages(connections=conns):
            out.append(reader.deserialize(raw, con.msgtype))
            if len(out) == limit:
                break
    return out


def _to_ros2(m) -> PointCloud2:
    msg = PointCloud2()
    msg.header = Header(frame_id=m.header.frame_id, stamp=Time(sec=m.header.stamp.sec, nanosec=m.header.stamp.nanosec))
    msg.height, msg.width = m.height, m.width
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in m.fields]
    msg.is_bigendian, msg.point_step, msg.row_step, msg.is_dense = m.is_bigendian, m.point_step, m.row_step, m.is_dense
    msg.data = m.data.tobytes()
    return msg


@pytest.mark.shared_data
def test_luminar_bag(luminar_bag):
    raws = _read_luminar(luminar_bag)
    assert raws
    for raw in raws:
        msg = _to_ros2(raw)
        assert msg.header.frame_id == "luminar_lidar" and msg.point_step == 32
        assert conv.cloud_field_names(msg) == ["x", "y", "z", "intensity", "time_sec", "time_nsec", "laser_id"]
        xyz = conv.pointcloud2_to_xyz(msg)
        xyzi = conv.pointcloud2_to_xyz(msg, skip_nans=False, fields=("x", "y", "z", "intensity"))
        assert xyz.shape == (msg.width * msg.height, 3) and msg.width > 30000
        # Per-point struct reference on a sample (padding at bytes 12..15 and 30..31 is skipped).
        data = bytes(msg.data)
        for i in range(0, msg.width, 997):
            x, y, z = struct.unpack_from("<3f", data, i * 32)
            inten, t_sec, t_nsec, laser = struct.unpack_from("<fIIH", data, i * 32 + 16)
            assert same_values(xyz[i], [x, y, z]) and same_values(xyzi[i, 3], inten)
            pts = conv.pointcloud2_to_structured(msg)
            assert (int(pts["time_sec"][i]), int(pts["time_nsec"][i]), int(pts["laser_id"][i])) == (
                t_sec,
                t_nsec,
                laser,
            )
        structured = conv.pointcloud2_to_structured(msg)
        assert structured.dtype["laser_id"] == np.uint16 and structured.dtype.itemsize == 32
        assert np.isfinite(xyz).all()
        # The rosbags message itself (numpy data) decodes identically (duck typing).
        assert np.array_equal(conv.pointcloud2_to_xyz(raw), xyz)


# ---------------------------------------------------------------------------------------------------------------
# Upstream sensor_msgs_py (only where importable)
# ---------------------------------------------------------------------------------------------------------------

needs_pc2 = pytest.mark.skipif(compat.point_cloud2 is None, reason="sensor_msgs_py not importable")


@needs_pc2
class TestAgainstSensorMsgsPy:
    @pytest.mark.parametrize("big", [False, True])
    @pytest.mark.parametrize("skip_nans", [False, True])
    def test_read_points(self, rng, big, skip_nans):
        vals = random_values(MIXED_LAYOUT, 30, rng)
        vals["x"][[3, 7]] = np.nan
        vals["z"][11] = np.nan
        msg = make_cloud(MIXED_LAYOUT, MIXED_STEP, vals, height=1, width=30, big=big)
        ours = conv.pointcloud2_to_structured(msg)
        theirs = compat.point_cloud2.read_points(copy.deepcopy(msg), skip_nans=False)  # it byte-swaps in place
        assert ours.dtype.names == theirs.dtype.names
        for name in ours.dtype.names:
            assert same_values(ours[name], theirs[name]), name
        fields = ["x", "intensity"]
        ours_xy = conv.pointcloud2_to_xyz(msg, skip_nans=skip_nans, fields=fields)
        theirs_xy = compat.point_cloud2.read_points_numpy(copy.deepcopy(msg), field_names=fields, skip_nans=skip_nans)
        assert same_values(ours_xy, theirs_xy)

    @pytest.mark.parametrize("is_dense", [False, True])
    def test_read_points_numpy_float32(self, rng, is_dense):
        layout = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 16, 7, 1)]
        vals = random_values(layout, 40, rng)
        vals["y"][[0, 5]] = np.nan
        vals["z"][9] = np.inf
        vals["intensity"][12] = np.nan
        msg = make_cloud(layout, 32, vals, height=4, width=10, is_dense=is_dense)
        for fields in (["x", "y", "z"], ["x", "y", "z", "intensity"]):
            ours = conv.pointcloud2_to_xyz(msg, skip_nans=True, fields=fields)
            theirs = compat.point_cloud2.read_points_numpy(copy.deepcopy(msg), field_names=fields, skip_nans=True)
            assert same_values(ours, theirs)

    def test_create_cloud_same_bytes(self, rng):
        pts = rng.normal(size=(25, 3)).astype(np.float32)
        ours = conv.xyz_to_pointcloud2(pts, Header(frame_id="a"))
        theirs = compat.point_cloud2.create_cloud_xyz32(Header(frame_id="a"), pts)
        assert bytes(ours.data) == bytes(theirs.data)
        assert [(f.name, f.offset, f.datatype, f.count) for f in ours.fields] == [
            (f.name, f.offset, f.datatype, f.count) for f in theirs.fields
        ]
        assert (ours.point_step, ours.row_step, ours.height, ours.width) == (
            theirs.point_step,
            theirs.row_step,
            theirs.height,
            theirs.width,
        )


needs_bridge = pytest.mark.skipif(compat.CvBridge is None, reason="cv_bridge (ROS 2 build) not importable")


@needs_bridge
class TestAgainstCvBridge:
    @pytest.mark.parametrize("encoding", ["mono8", "mono16", "16UC1", "32FC1", "rgb8", "bgr8", "rgba8", "bgra8"])
    def test_imgmsg_to_cv2(self, rng, encoding):
        dtype, channels = ENCODINGS[encoding]
        arr = random_image(rng, dtype, channels)
        msg = encode_image(arr, encoding, pad=4)
        bridge = compat.CvBridge()
        assert np.array_equal(conv.image_to_array(msg), bridge.imgmsg_to_cv2(msg))
        if channels >= 3:
            assert np.array_equal(conv.image_to_array(msg, "rgb8"), bridge.imgmsg_to_cv2(msg, "rgb8"))
        ours = conv.array_to_image(arr, encoding)
        theirs = bridge.cv2_to_imgmsg(arr, encoding)
        assert bytes(ours.data) == bytes(theirs.data) and ours.step == theirs.step
