"""The malformed-input matrix (issue 6) against one real depth_completion_node process.

Each bad case must give exactly one clear "frame skipped" log line naming the problem and no output for that
stamp; legitimate-but-unusual inputs (float64 or big-endian clouds, 2 million points, a zero stamp) must be
processed. After every case a good frame must come out: the node keeps running and loses nothing after it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

W, H = 160, 120
FX = FY = 100.0
CX, CY = 79.5, 59.5
CAM, LIDAR = "camera_optical", "lidar"
T_CAM_LIDAR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
S = 1_000_000_000


def _points(n: int = 600, rng: np.random.Generator | None = None) -> np.ndarray:
    """LiDAR-frame points (x forward) on a wall 6-10 m ahead, inside the camera's view."""
    rng = rng or np.random.default_rng(0)
    x = rng.uniform(6, 10, n)
    return np.column_stack([x, rng.uniform(-0.7, 0.7, n) * x, rng.uniform(-0.5, 0.5, n) * x]).astype(np.float32)


def _cloud(points: np.ndarray, t_ns: int, msgs, *, dtype=np.float32, bigendian=False, names="xyz", step=None):
    from sensor_msgs.msg import PointCloud2, PointField

    code = {np.float32: PointField.FLOAT32, np.float64: PointField.FLOAT64}[dtype]
    size = np.dtype(dtype).itemsize
    arr = np.ascontiguousarray(points, dtype=np.dtype(dtype).newbyteorder(">" if bigendian else "<"))
    msg = PointCloud2(header=msgs.header(t_ns, LIDAR), height=1, width=len(arr))
    msg.fields = [PointField(name=n, offset=size * i, datatype=code, count=1) for i, n in enumerate(names)]
    msg.is_bigendian = bigendian
    msg.point_step = step if step is not None else 3 * size
    msg.row_step = msg.point_step * len(arr)
    msg.is_dense = False
    msg.data = arr.tobytes()[: msg.row_step]  # consistent with point_step, so only the overlap is wrong
    return msg


def test_malformed_input_matrix(start_node, ros_peer, msgs):
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    node = start_node(
        "depth_completion_node",
        params={
            "input_type": "pointcloud",
            "extrinsic_matrix": [float(v) for v in T_CAM_LIDAR.ravel()],
            "slop": 0.05,
            "min_depth": 0.5,
            "max_depth": 50.0,
            "device": "cpu",
            "qos_reliability": "reliable",
        },
    )
    node.wait_for_log(r"ready: input_type=pointcloud", timeout=40)
    pub_img = ros_peer.publisher(Image, "/rgb/image")
    pub_info = ros_peer.publisher(CameraInfo, "/rgb/camera_info")
    pub_cloud = ros_peer.publisher(PointCloud2, "/lidar/points")
    depth = ros_peer.collector(Image, "/depth")
    for pub in (pub_img, pub_info, pub_cloud):
        ros_peer.wait_for_subscribers(pub)
    ros_peer.wait_for_publishers("/depth")
    time.sleep(0.5)
    rgb = np.full((H, W, 3), 120, np.uint8)
    rgb[:, W // 2 :] = (30, 60, 200)
    pts = _points()

    def send(t, *, image=None, info=None, cloud=None):
        pub_info.publish(info or msgs.camera_info(t, CAM, W, H, FX, FY, CX, CY))
        pub_cloud.publish(cloud or msgs.cloud(pts, t, LIDAR))
        pub_img.publish(image or msgs.image(rgb, t, CAM))

    def wait_output(t, timeout=20.0) -> None:
        depth.wait_stamp(t, timeout)

    def bad_image(**fields):
        msg = msgs.image(rgb, 0, CAM)
        for k, v in fields.items():
            setattr(msg, k, v)
        return msg

    nan_d = msgs.camera_info(0, CAM, W, H, FX, FY, CX, CY)
    nan_d.d = [0.1, float("nan"), 0.0, 0.0, 0.0]
    k_zero = msgs.camera_info(0, CAM, W, H, 0.0, 0.0, 0.0, 0.0)
    k_zero.k = [0.0] * 9
    k_zero.p = [0.0] * 12
    inf_pts = np.full((100, 3), np.inf, np.float32)
    behind = pts.copy()
    behind[:, 0] *= -1.0
    short = _cloud(pts, 0, msgs)
    short.data = bytes(short.data)[:-100]
    rejected = [
        ("empty cloud", {"cloud": _cloud(np.zeros((0, 3)), 0, msgs)}, r"no finite points|empty|no point"),
        ("all-inf cloud", {"cloud": _cloud(inf_pts, 0, msgs)}, r"no finite points"),
        ("all points behind the camera", {"cloud": _cloud(behind, 0, msgs)}, r"no point|behind|in front|image"),
        ("missing x/y/z", {"cloud": _cloud(pts, 0, msgs, names="abc")}, r"\bx\b|field"),
        ("data shorter than width*point_step", {"cloud": short}, r"data|bytes|short|length"),
        ("point_step smaller than fields", {"cloud": _cloud(pts, 0, msgs, step=8)}, r"point_step"),
        ("unknown encoding", {"image": bad_image(encoding="weird8")}, r"weird8"),
        ("zero width", {"image": bad_image(width=0, step=0, data=b"")}, r"width|size|empty"),
        ("step smaller than width*bytes", {"image": bad_image(step=W * 3 - 1)}, r"step"),
        ("data shorter than height*step", {"image": bad_image(data=bytes(W * 3 * (H - 1)))}, r"data|short|bytes"),
        (
            "RGB and CameraInfo sizes differ",
            {"info": msgs.camera_info(0, CAM, 2 * W, H, FX, FY, CX, CY)},
            r"size|\dx\d",
        ),
        ("K all zero", {"info": k_zero}, r"uncalibrated|K\[0\]"),
        ("NaN in distortion", {"info": nan_d}, r"NaN|nan|finite"),
    ]
    accepted = [
        ("float64 cloud", {"cloud": _cloud(pts, 0, msgs, dtype=np.float64)}),
        ("big-endian cloud", {"cloud": _cloud(pts, 0, msgs, bigendian=True)}),
        ("2 million points", {"cloud": _cloud(_points(2_000_000), 0, msgs)}),
    ]
    t = 100 * S
    send(t)
    wait_output(t)
    report = []
    for label, bad, pattern in rejected:
        t += S
        time.sleep(2.1)  # the node throttles a repeated cause to one line per 2 s; each case gets its own line
        start = len(node.output())
        for msg in bad.values():
            msg.header.stamp = msgs.stamp(t)
        send(t, **bad)
        node.wait_for_log(r"frame skipped", timeout=15, start=start)
        time.sleep(0.3)
        line = next(ln for ln in node.output()[start:].splitlines() if "frame skipped" in ln)
        assert node.count(r"frame skipped", start=start) == 1, f"{label}: {node.output()[start:]}"
        assert __import__("re").search(pattern, line), f"{label}: unclear message {line!r}"
        assert depth.with_stamp(t) is None, label
        report.append((label, line.split("frame skipped", 1)[1].strip()[:100]))
        t += S
        send(t)
        wait_output(t)
    for label, good in accepted:
        t += S
        for msg in good.values():
            msg.header.stamp = msgs.stamp(t)
        send(t, **good)
        wait_output(t, timeout=40)
        report.append((label, "processed"))
    # Timing: stamps backwards (bag loop), far in the future, and zero are processed, not fatal.
    odd_stamps = (("stamps backwards", 50 * S), ("stamp far in the future (2034)", 2_050_000_000 * S), ("zero", 0))
    for label, t_odd in odd_stamps:
        send(t_odd)
        wait_output(t_odd)
        report.append((label, "processed"))
    assert node.proc.poll() is None
    for label, result in report:
        print(f"{label:40s} -> {result}")
