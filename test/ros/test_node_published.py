"""depth_completion_node with a published model (method enet): the RGB CameraInfo's K reaches the network.

Skips where the enet architecture is not registered (the framework alone has none).  Random weights, seeded; the
node's depth must equal the core API's offline with the same camera model, and differ with another K (ENet's
geometric encoding uses K), which shows that the node passes the CameraInfo's camera to `complete`.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

W, H = 96, 64
FX = FY = 80.0
CX, CY = 47.5, 31.5
CAM = "camera_optical"
S = 1_000_000_000


def _enet():
    from depth_completion_ros.core.published import get_architecture

    try:
        return get_architecture("enet")
    except ValueError:
        pytest.skip("the enet architecture is not registered here")


def _scene():
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[...] = (60, 90, 160)
    rgb[20:44, 30:60] = (220, 120, 40)
    truth = np.full((H, W), 6.0, np.float32)
    truth[20:44, 30:60] = 3.0
    spots = np.zeros((H, W), np.float32)
    spots[::4, ::4] = truth[::4, ::4]
    return rgb, spots


def test_enet_through_the_node(start_node, ros_peer, msgs, tmp_path):
    import torch
    from sensor_msgs.msg import CameraInfo, Image

    from depth_completion_ros.core.camera import CameraModel
    from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
    from depth_completion_ros.core.published.importer import save_published

    arch = _enet()
    torch.manual_seed(0)
    ckpt = tmp_path / "enet_random.safetensors"
    save_published(ckpt, arch, arch.build(arch.default_config), arch.default_config)
    params = {"input_type": "depth", "method": "enet", "checkpoint": str(ckpt), "device": "cpu", "max_depth": 20.0}
    params.update(min_depth=0.2, slop=0.03)
    node = start_node("depth_completion_node", params=params)
    node.wait_for_log(r"ready: input_type=depth, method=enet", timeout=90)
    pubs = {
        "image": ros_peer.publisher(Image, "/rgb/image"),
        "info": ros_peer.publisher(CameraInfo, "/rgb/camera_info"),
        "depth": ros_peer.publisher(Image, "/sensor_depth/image"),
        "dinfo": ros_peer.publisher(CameraInfo, "/sensor_depth/camera_info"),
    }
    out_depth = ros_peer.collector(Image, "/depth")
    for pub in pubs.values():
        ros_peer.wait_for_subscribers(pub)
    ros_peer.wait_for_publishers("/depth")
    time.sleep(0.5)
    rgb, spots = _scene()
    t = 10 * S
    pubs["info"].publish(msgs.camera_info(t, CAM, W, H, FX, FY, CX, CY))
    pubs["dinfo"].publish(msgs.camera_info(t, CAM, W, H, FX, FY, CX, CY))
    pubs["depth"].publish(msgs.image(spots, t, CAM, encoding="32FC1"))
    pubs["image"].publish(msgs.image(rgb, t, CAM))
    msg = out_depth.wait_stamp(t, timeout=60)[0]
    got = np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.step // 4)[:, : msg.width]

    offline = DepthCompleter(CompleterConfig(method="enet", checkpoint=ckpt, device="cpu", max_depth=20.0))
    K = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1]])
    P = np.hstack([K, np.zeros((3, 1))])
    camera = CameraModel(width=W, height=H, K=K, P=P, rectified=True)
    ref, _ = offline.complete(rgb, spots, camera)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    other, _ = offline.complete(
        rgb, spots, CameraModel(width=W, height=H, K=K * [[2], [2], [1]], P=P * [[2], [2], [1]], rectified=True)
    )
    assert np.abs(other - ref).max() > 1e-3, "K does not change ENet's output: the check above proves nothing"
    assert node.proc.poll() is None
