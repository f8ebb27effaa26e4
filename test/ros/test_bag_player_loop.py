"""BagPlayer loop timing on a fake clock (no timed assertions): a zero-duration bag loops at its stored rate or
the default, a longer bag keeps its own frame period between passes; kitti-to-bag stores its rate."""

from __future__ import annotations

from pathlib import Path

import pytest
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from depth_completion_ros.core.calibration import KittiCalibration
from depth_completion_ros.data.synthetic import generate_scene
from depth_completion_ros.ros.bag_player import DEFAULT_LOOP_RATE_HZ, RATE_KEY, BagPlayer
from depth_completion_ros.tools.kitti_to_bag import KittiFrame, write_bag

pytest.importorskip("rclpy")
T0 = 1_700_000_000_000_000_000


def _string_bag(path: Path, stamps_ns: list[int], rate_hz: str | None = None) -> Path:
    store = get_typestore(Stores.ROS2_KILTED)
    String = store.types["std_msgs/msg/String"]
    with Writer(path, version=9) as writer:
        if rate_hz is not None:
            writer.set_custom_data(RATE_KEY, rate_hz)
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for k, t in enumerate(stamps_ns):
            writer.write(conn, t, store.serialize_cdr(String(data=f"m{k}"), "std_msgs/msg/String"))
    return path


class FakeNode:
    """Records (topic, fake time) of each publish; stops the player after `limit` messages."""

    def __init__(self, clock: list[float], limit: int) -> None:
        self.clock, self.limit = clock, limit
        self.sent: list[tuple[str, float]] = []
        self.player: BagPlayer | None = None

    def create_publisher(self, _cls, topic, _qos):
        node = self

        class Pub:
            def publish(self, _data) -> None:
                node.sent.append((topic, node.clock[0]))
                if len(node.sent) >= node.limit and node.player is not None:
                    node.player.stop()

        return Pub()

    def get_logger(self):
        class Log:
            def warning(self, _text) -> None:
                pass

        return Log()


def _play(bag: Path, limit: int, **kwargs) -> tuple[BagPlayer, list[float]]:
    clock = [100.0]

    def sleep(dt: float) -> None:
        assert dt > 0  # the player never busy-waits on a zero sleep
        clock[0] += dt

    node = FakeNode(clock, limit)
    player = BagPlayer(node, bag, loop=True, clock=lambda: clock[0], sleep=sleep, **kwargs)
    node.player = player
    player.play()
    player.close()
    return player, [t - 100.0 for _, t in node.sent]


def test_zero_duration_bag_loops_at_stored_rate(tmp_path: Path) -> None:
    bag = _string_bag(tmp_path / "bag", [T0], rate_hz="4.0")
    player, times = _play(bag, limit=5)
    assert player.loop_period_s == pytest.approx(0.25)
    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_zero_duration_bag_without_rate_loops_at_default_and_rate_factor(tmp_path: Path) -> None:
    bag = _string_bag(tmp_path / "bag", [T0, T0])  # two messages, one stamp: still zero duration
    _, times = _play(bag, limit=6, rate=2.0)
    period = 1.0 / DEFAULT_LOOP_RATE_HZ / 2.0
    assert times == pytest.approx([0.0, 0.0, period, period, 2 * period, 2 * period])


def test_bag_keeps_its_own_period_between_passes(tmp_path: Path) -> None:
    bag = _string_bag(tmp_path / "bag", [T0, T0 + 200_000_000, T0 + 400_000_000])
    player, times = _play(bag, limit=7)
    assert player.loop_period_s == pytest.approx(0.2)
    assert times == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2])


def test_kitti_to_bag_stores_its_rate(tmp_path: Path) -> None:
    scene = generate_scene(seed=1, width=64, height=24, lidar_beams=8)
    frames = iter([KittiFrame(scene.rgb, scene.points_lidar, T0)])
    bag = tmp_path / "bag"
    write_bag(bag, KittiCalibration(scene.camera, scene.T_camera_from_lidar), frames, rate_hz=5.0)
    assert f"{RATE_KEY}: '5.0'" in (bag / "metadata.yaml").read_text()
    player, times = _play(bag, limit=8, topics=["/kitti/camera/image_raw", "/kitti/velo/points"])
    assert player.loop_period_s == pytest.approx(0.2)
    assert times == pytest.approx([0.0, 0.0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6])


def test_wait_for_subscribers_on_every_topic_but_tf_static(tmp_path: Path) -> None:
    scene = generate_scene(seed=1, width=64, height=24, lidar_beams=8)
    bag = tmp_path / "bag"
    write_bag(
        bag,
        KittiCalibration(scene.camera, scene.T_camera_from_lidar),
        iter([KittiFrame(scene.rgb, scene.points_lidar, T0)]),
    )
    clock = [0.0]
    counts: dict[str, int] = {}

    class Node(FakeNode):
        def create_publisher(self, _cls, topic, _qos):
            class Pub:
                def get_subscription_count(self) -> int:
                    return counts.get(topic, 0)

            return Pub()

    def sleep(dt: float) -> None:
        clock[0] += dt
        counts["/kitti/camera/image_raw"] = 1  # subscribers appear one by one while the player waits
        if clock[0] > 1.0:
            counts["/kitti/camera/camera_info"] = counts["/kitti/velo/points"] = 1

    player = BagPlayer(Node(clock, 0), bag, clock=lambda: clock[0], sleep=sleep)
    assert not player.wait_for_subscribers(0.5)
    assert player.wait_for_subscribers(5.0)  # /tf_static (latched) needs none
    assert 1.0 < clock[0] < 1.2
    player.close()
