"""depth_completion_node as a real process, fed over DDS from the test process.

One process per input type; each groups several checks (outputs, sync, bad inputs, load) to keep starts few.
Scene: a wall at 8 m with a box at 4 m in front of a 160×120 camera; LiDAR points sampled at known pixels
(offset by a quarter pixel, so any rounding convention lands on the same pixel), expressed in a LiDAR frame
with a KITTI-like rotation.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

W, H = 160, 120
FX = FY = 100.0
CX, CY = 79.5, 59.5
CAM = "camera_optical"
LIDAR = "lidar"
R_CAM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
T_CAM_LIDAR = np.eye(4)
T_CAM_LIDAR[:3, :3] = R_CAM_LIDAR
T_CAM_LIDAR[:3, 3] = [0.1, -0.2, 0.05]
BOX = (40, 80, 30, 70)  # u0, u1, v0, v1: box at 4 m, elsewhere wall at 8 m
S = 1_000_000_000


def scene_depth() -> np.ndarray:
    z = np.full((H, W), 8.0, np.float32)
    u0, u1, v0, v1 = BOX
    z[v0:v1, u0:u1] = 4.0
    return z


def scene_rgb() -> np.ndarray:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[...] = (60, 90, 160)
    u0, u1, v0, v1 = BOX
    rgb[v0:v1, u0:u1] = (220, 120, 40)
    return rgb


def lidar_points(step: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """LiDAR-frame points (N, 3) and the expected sparse depth (H, W) (NaN = none), computed by hand."""
    depth = scene_depth()
    vs, us = np.mgrid[0:H:step, 0:W:step]
    us, vs = us.ravel(), vs.ravel()
    z = depth[vs, us].astype(np.float64)
    x = (us + 0.25 - CX) * z / FX
    y = (vs + 0.25 - CY) * z / FY
    p_cam = np.stack([x, y, z], axis=1)
    p_lidar = (p_cam - T_CAM_LIDAR[:3, 3]) @ R_CAM_LIDAR  # R^T (p - t), row-wise
    expected = np.full((H, W), np.nan, np.float32)
    expected[vs, us] = z
    return p_lidar.astype(np.float32), expected


def _set_parameters(peer, node_name: str, **values):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = peer.node.create_client(SetParameters, f"/{node_name}/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    future = client.call_async(request)
    deadline = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert future.done(), "set_parameters did not answer"
    return future.result().results


def _image_array(msg) -> np.ndarray:
    """Decode a 32FC1 / rgb8 Image by hand (independent of conversions.py)."""
    if msg.encoding == "32FC1":
        return np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.step // 4)[:, : msg.width]
    assert msg.encoding == "rgb8"
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]


def test_pointcloud_node_end_to_end(start_node, ros_peer, msgs):
    from depth_completion_ros.msg import NodeStats
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    node = start_node(
        "depth_completion_node",
        params={
            "input_type": "pointcloud",
            "extrinsic_matrix": [float(v) for v in T_CAM_LIDAR.ravel()],
            "slop": 0.05,
            "queue_size": 10,
            "min_depth": 0.5,
            "max_depth": 50.0,
            "publish_points": True,
            "points_decimation": 4,
            "device": "cpu",
        },
    )
    node.wait_for_log(r"ready: input_type=pointcloud", timeout=40)
    pub_img = ros_peer.publisher(Image, "/rgb/image")
    pub_info = ros_peer.publisher(CameraInfo, "/rgb/camera_info")
    pub_cloud = ros_peer.publisher(PointCloud2, "/lidar/points")
    out = {
        "depth": ros_peer.collector(Image, "/depth"),
        "confidence": ros_peer.collector(Image, "/confidence"),
        "info": ros_peer.collector(CameraInfo, "/camera_info"),
        "sparse": ros_peer.collector(Image, "/sparse_depth"),
        "color": ros_peer.collector(Image, "/depth_color"),
        "points": ros_peer.collector(PointCloud2, "/points"),
        "stats": ros_peer.collector(NodeStats, "/stats"),
    }
    for pub in (pub_img, pub_info, pub_cloud):
        ros_peer.wait_for_subscribers(pub)
    ros_peer.wait_for_publishers("/depth")
    time.sleep(0.5)

    points, expected_sparse = lidar_points()
    rgb = scene_rgb()

    def send(t_ns, *, image=None, info=None, cloud=None, cloud_dt=0):
        pub_info.publish(info or msgs.camera_info(t_ns, CAM, W, H, FX, FY, CX, CY))
        pub_cloud.publish(cloud or msgs.cloud(points, t_ns + cloud_dt, LIDAR))
        pub_img.publish(image or msgs.image(rgb, t_ns, CAM))

    # ---- 1. outputs: types, encodings, sizes, stamps, values
    t1 = 100 * S + 123
    send(t1)
    depth_msg = out["depth"].wait_stamp(t1)[0]
    assert (depth_msg.encoding, depth_msg.width, depth_msg.height) == ("32FC1", W, H)
    assert depth_msg.header.frame_id == CAM
    for key in ("confidence", "sparse", "color", "info", "points", "stats"):
        out[key].wait_stamp(t1)
    conf = _image_array(out["confidence"].wait_stamp(t1)[0])
    assert conf.shape == (H, W)
    assert np.nanmin(conf) >= 0.0
    assert np.nanmax(conf) <= 1.0
    color = out["color"].wait_stamp(t1)[0]
    assert (color.encoding, color.width, color.height) == ("rgb8", W, H)
    info = out["info"].wait_stamp(t1)[0]
    assert (info.width, info.height) == (W, H)
    np.testing.assert_allclose(info.k, [FX, 0, CX, 0, FY, CY, 0, 0, 1])
    assert info.header.frame_id == CAM

    sparse = _image_array(out["sparse"].wait_stamp(t1)[0])
    got = np.isfinite(sparse)
    assert got.sum() >= 0.8 * np.isfinite(expected_sparse).sum()  # occlusion filtering may drop a few
    assert np.all(np.isfinite(expected_sparse)[got]), "sparse depth at pixels no point projects to"
    np.testing.assert_allclose(sparse[got], expected_sparse[got], atol=1e-3)

    dense = _image_array(depth_msg)
    u0, u1, v0, v1 = BOX
    box = dense[v0 + 5 : v1 - 5, u0 + 5 : u1 - 5]
    assert np.isfinite(box).mean() > 0.95
    assert abs(float(np.nanmedian(box)) - 4.0) < 0.2
    wall = np.concatenate([dense[:, : u0 - 10].ravel(), dense[:, u1 + 10 :].ravel()])
    assert np.mean(np.abs(wall[np.isfinite(wall)] - 8.0) < 0.4) > 0.9

    cloud_out = out["points"].wait_stamp(t1)[0]
    assert {f.name for f in cloud_out.fields} >= {"x", "y", "z", "rgb"}
    assert cloud_out.header.frame_id == CAM
    n_out = cloud_out.width * cloud_out.height
    assert 0 < n_out <= (W // 4) * (H // 4)

    stats = out["stats"].wait_stamp(t1)[0]
    assert stats.frames_processed >= 1
    assert stats.method == "default"
    assert stats.input_points == len(points)
    assert 0.0 < stats.sparse_coverage < 0.1
    assert stats.dense_coverage > 0.9
    assert stats.total_ms > 0.0

    # ---- 2. sync: beyond slop no output; within slop output with the image's stamp
    t2 = 101 * S
    send(t2, cloud_dt=200_000_000)  # cloud 200 ms after image (slop 50 ms)
    t3 = 102 * S
    send(t3, cloud_dt=20_000_000)  # 20 ms: matches
    out["depth"].wait_stamp(t3)
    time.sleep(0.3)
    assert out["depth"].with_stamp(t2) is None

    # ---- 3. bad inputs: one clear log line each; the next good frame is processed
    good_points_msg = msgs.cloud(points, 0, LIDAR)
    truncated = msgs.cloud(points, 0, LIDAR)
    truncated.data = bytes(good_points_msg.data)[: len(good_points_msg.data) // 2]
    nan_cloud = msgs.cloud(np.full((50, 3), np.nan, np.float32), 0, LIDAR)
    bad_cases = [
        ("truncated cloud", {"cloud": truncated}, r"frame skipped \(\w+\): .*(PointCloud2|data|bytes|short)"),
        ("unknown encoding", {"image": msgs.image(rgb, 0, CAM, encoding="weird8")}, r"frame skipped .*weird8"),
        (
            "size mismatch",
            {"info": msgs.camera_info(0, CAM, 2 * W, 2 * H, FX, FY, CX, CY)},
            r"frame skipped .*(size|\d+x\d+)",
        ),
        (
            "uncalibrated CameraInfo",
            {"info": msgs.camera_info(0, CAM, W, H, 0.0, 0.0, 0.0, 0.0)},
            r"frame skipped \(CalibrationError\)",
        ),
        ("NaN cloud", {"cloud": nan_cloud}, r"frame skipped .*no finite points"),
    ]
    t = 200 * S
    for label, bad, pattern in bad_cases:
        start = len(node.output())
        for msg in bad.values():
            msg.header.stamp = msgs.stamp(t)
        send(t, **bad)
        node.wait_for_log(pattern, timeout=15, start=start)
        assert node.count(r"frame skipped", start=start) == 1, label
        time.sleep(0.2)
        assert out["depth"].with_stamp(t) is None, label
        t += S
        send(t)
        out["depth"].wait_stamp(t)
        t += S
    assert node.proc.poll() is None

    # ---- 4. run-time parameters: safe ones change, others are refused
    results = _set_parameters(ros_peer, "depth_completion_node", publish_points=False, iterations=2)
    assert all(r.successful for r in results)
    (refused,) = _set_parameters(ros_peer, "depth_completion_node", method="cspn")
    assert not refused.successful
    (refused,) = _set_parameters(ros_peer, "depth_completion_node", iterations=-1)
    assert not refused.successful
    n_points = len(out["points"].messages)
    send(t)
    out["depth"].wait_stamp(t)
    time.sleep(0.3)
    assert len(out["points"].messages) == n_points  # publish_points switched off
    t += S

    # ---- 5. load: while completion is slow, inputs are dropped, not queued
    (ok,) = _set_parameters(ros_peer, "depth_completion_node", debug_delay_ms=600)
    assert ok.successful
    before = len(out["depth"].messages)
    sent = []
    for _ in range(12):
        send(t)
        sent.append(t)
        t += S
        time.sleep(0.05)
    last = out["depth"].wait_stamp(sent[-1], timeout=30)[0]  # the newest set is always processed
    time.sleep(1.0)
    processed = len(out["depth"].messages) - before
    assert processed <= 4, f"{processed} of 12 processed: inputs were queued, not dropped"
    stats = out["stats"].wait_stamp(out["depth"].stamp_of(last))[0]
    assert stats.frames_dropped >= 12 - processed - 1
    assert node.stop() == 0


def test_invalid_parameters_refused_at_start(start_node):
    node = start_node("depth_completion_node", params={"method": "magic"})
    node.proc.wait(60)
    assert node.proc.returncode == 2
    text = node.output()
    assert "refusing to start" in text
    assert "'method'" in text
    node = start_node("depth_completion_node", params={"slop": -1.0})
    node.proc.wait(60)
    assert node.proc.returncode == 2
    assert "slop" in node.output()


def test_depth_image_input(start_node, ros_peer, msgs):
    """input_type depth: 16UC1 millimetres aligned to the RGB camera (same frame, same size)."""
    from sensor_msgs.msg import CameraInfo, Image

    node = start_node(
        "depth_completion_node",
        params={"input_type": "depth", "slop": 0.03, "min_depth": 0.2, "max_depth": 20.0, "device": "cpu"},
    )
    node.wait_for_log(r"ready: input_type=depth", timeout=40)
    pubs = {
        "image": ros_peer.publisher(Image, "/rgb/image"),
        "info": ros_peer.publisher(CameraInfo, "/rgb/camera_info"),
        "depth": ros_peer.publisher(Image, "/sensor_depth/image"),
        "dinfo": ros_peer.publisher(CameraInfo, "/sensor_depth/camera_info"),
    }
    out_depth = ros_peer.collector(Image, "/depth")
    out_sparse = ros_peer.collector(Image, "/sparse_depth")
    for pub in pubs.values():
        ros_peer.wait_for_subscribers(pub)
    ros_peer.wait_for_publishers("/depth")
    time.sleep(0.5)

    truth = scene_depth()
    spots = np.zeros((H, W), np.uint16)
    spots[::6, ::6] = np.round(truth[::6, ::6] * 1000).astype(np.uint16)  # ToF-like spot pattern, mm
    t = 50 * S
    for encoding, array in (("16UC1", spots), ("32FC1", spots.astype(np.float32) / 1000.0)):
        pubs["info"].publish(msgs.camera_info(t, CAM, W, H, FX, FY, CX, CY))
        pubs["dinfo"].publish(msgs.camera_info(t, CAM, W, H, FX, FY, CX, CY))
        pubs["depth"].publish(msgs.image(array, t, CAM, encoding=encoding))
        pubs["image"].publish(msgs.image(scene_rgb(), t, CAM))
        dense = _image_array(out_depth.wait_stamp(t)[0])
        sparse = _image_array(out_sparse.wait_stamp(t)[0])
        np.testing.assert_allclose(sparse[::6, ::6], truth[::6, ::6], atol=1e-3)
        assert np.isnan(sparse[1::6, 1::6]).all()
        valid = np.isfinite(dense)
        assert valid.mean() > 0.95
        assert np.median(np.abs(dense[valid] - truth[valid])) < 0.1, encoding
        t += S
    assert node.proc.poll() is None


@pytest.mark.shared_data
def test_tum_depth_input_matches_offline_core(start_node, ros_peer, msgs, tum_dir):
    """ToF-like spots from the TUM frame through the node (input_type depth, 32FC1) = the core API offline."""
    import cv2
    from sensor_msgs.msg import CameraInfo, Image

    from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
    from depth_completion_ros.core.units import TUM_PNG_SCALE

    rgb = cv2.cvtColor(cv2.imread(str(tum_dir / "TUM_color.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    full = cv2.imread(str(tum_dir / "TUM_depth.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / TUM_PNG_SCALE
    h, w = full.shape
    spots = np.zeros_like(full)
    spots[4::10, 4::10] = full[4::10, 4::10]  # ~3000 spots, like a ToF dot projector
    node = start_node(
        "depth_completion_node",
        params={"input_type": "depth", "min_depth": 0.1, "max_depth": 10.0, "iterations": 8, "device": "cpu"},
    )
    node.wait_for_log(r"ready: input_type=depth", timeout=40)
    pubs = [
        ros_peer.publisher(CameraInfo, "/rgb/camera_info"),
        ros_peer.publisher(CameraInfo, "/sensor_depth/camera_info"),
        ros_peer.publisher(Image, "/sensor_depth/image"),
        ros_peer.publisher(Image, "/rgb/image"),
    ]
    out = ros_peer.collector(Image, "/depth")
    for pub in pubs:
        ros_peer.wait_for_subscribers(pub)
    ros_peer.wait_for_publishers("/depth")
    time.sleep(0.5)
    t = 7 * S
    pubs[0].publish(msgs.camera_info(t, "rgb", w, h, 525.0, 525.0, 319.5, 239.5))
    pubs[1].publish(msgs.camera_info(t, "rgb", w, h, 525.0, 525.0, 319.5, 239.5))
    pubs[2].publish(msgs.image(spots, t, "rgb", encoding="32FC1"))
    pubs[3].publish(msgs.image(rgb, t, "rgb"))
    dense = np.frombuffer(bytes(out.wait_stamp(t, timeout=60)[0].data), np.float32).reshape(h, w)

    offline, _ = DepthCompleter(CompleterConfig(method="default", device="cpu", iterations=8, max_depth=10.0)).complete(
        rgb, spots
    )
    offline = np.where(offline > 0, offline, np.nan)
    np.testing.assert_allclose(dense, offline, rtol=1e-4, atol=1e-4, equal_nan=True)
    valid = (full > 0) & np.isfinite(dense)
    mae = float(np.mean(np.abs(dense[valid] - full[valid])))
    assert valid.sum() > 0.5 * (full > 0).sum()
    assert mae < 0.15, f"MAE {mae:.3f} m against the full TUM depth"
