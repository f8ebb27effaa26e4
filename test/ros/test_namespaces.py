"""Namespaces (image_pipeline convention): outputs relative to the node's namespace, the config files apply in any
namespace, pointcloud_to_depth_node never collides with depth_completion_node, and two cameras run side by side."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[2]
W, H = 64, 48
S = 1_000_000_000


def test_two_cameras_side_by_side(start_node, ros_peer, msgs) -> None:
    from sensor_msgs.msg import CameraInfo, Image

    nodes = {}
    for cam in ("cam1", "cam2"):
        nodes[cam] = start_node(
            "depth_completion_node",
            params_file=REPO / "config" / "tof.yaml",
            params={"device": "cpu", "qos_reliability": "reliable"},
            remap={"__ns": f"/{cam}"},
        )
    projector = start_node("pointcloud_to_depth_node", remap={"__ns": "/cam1"})
    for cam, node in nodes.items():
        # input_type=depth comes from config/tof.yaml: its `/**/depth_completion_node` key matched in the namespace
        node.wait_for_log(rf"ready: input_type=depth.*inputs: /{cam}/rgb/image, /{cam}/rgb/camera_info", timeout=40)
    projector.wait_for_log(r"ready: .*inputs: /cam1/lidar/points, /cam1/rgb/camera_info", timeout=40)

    pubs, depth_out = {}, {}
    for cam in nodes:
        pubs[cam] = [
            ros_peer.publisher(Image, f"/{cam}/rgb/image"),
            ros_peer.publisher(CameraInfo, f"/{cam}/rgb/camera_info"),
            ros_peer.publisher(Image, f"/{cam}/sensor_depth/image"),
            ros_peer.publisher(CameraInfo, f"/{cam}/sensor_depth/camera_info"),
        ]
        depth_out[cam] = ros_peer.collector(Image, f"/{cam}/depth")
        for pub in pubs[cam]:
            ros_peer.wait_for_subscribers(pub)
        ros_peer.wait_for_publishers(f"/{cam}/depth")
    for topic in ("/cam1/sparse_depth", "/cam1/depth_registered/image", "/cam2/camera_info"):
        ros_peer.wait_for_publishers(topic)  # discovered before they are counted
    # one publisher per name: the two nodes' outputs and pointcloud_to_depth_node's never share a topic
    count = ros_peer.node.count_publishers
    assert count("/depth") == count("/camera_info") == 0
    assert count("/cam1/camera_info") == count("/cam2/camera_info") == 1
    assert count("/cam1/sparse_depth") == count("/cam1/depth_registered/image") == 1
    time.sleep(0.5)

    sent = {"cam1": 3.0, "cam2": 7.0}  # metres: each camera sees its own wall
    for k in range(3):
        t = (10 + k) * S
        for cam, z in sent.items():
            img, info, dimg, dinfo = pubs[cam]
            sparse = np.zeros((H, W), np.float32)
            sparse[::6, ::6] = z
            cam_info = msgs.camera_info(t, f"{cam}_optical", W, H, 50.0, 50.0, 31.5, 23.5)
            info.publish(cam_info)
            dinfo.publish(cam_info)
            dimg.publish(msgs.image(sparse, t, f"{cam}_optical", encoding="32FC1"))
            img.publish(msgs.image(np.full((H, W, 3), 100, np.uint8), t, f"{cam}_optical"))
        time.sleep(0.2)
    for cam, z in sent.items():
        msg = depth_out[cam].wait(1)[0]
        assert msg.header.frame_id == f"{cam}_optical"
        depth = np.frombuffer(bytes(msg.data), np.float32).reshape(H, W)
        assert np.nanmedian(depth) == pytest.approx(z, rel=0.05)
