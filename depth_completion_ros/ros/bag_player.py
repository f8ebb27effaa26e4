"""`bag_player`: replay rosbag2 (mcap / sqlite3) and ROS 1 bags onto live topics at the recorded rate.

For the pip-only setup, where `ros2 bag play` (rosbag2) is not installable; semantics follow it: a rate factor,
`--delay` before starting (lets discovery finish), `--loop` (replays the same recorded stamps again, no
re-stamping, as `ros2 bag play --loop`, and keeps the bag's own period: the next pass starts one frame period
after the last message, so a bag whose messages share one stamp loops at its frame rate instead of spinning),
`--start-offset`
seconds into the bag, topic selection, and optional `/clock` (rosgraph_msgs/Clock) at `--clock HZ`. ROS 2 bags
are published as their stored CDR bytes (no deserialization); ROS 1 messages are converted to CDR by rosbags.
`/tf_static` and other topics recorded as transient-local are republished transient-local.

Run: `ros2 run depth_completion_ros bag_player BAG --rate 1.0` or `depth-completion play BAG`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LOOP_RATE_HZ", "BagPlayer", "add_arguments", "frame_period_s", "main", "message_class"]

DEFAULT_LOOP_RATE_HZ = 10.0
"""Frame rate of a looped bag that has no stored rate and no duration to derive one from (one frame)."""
RATE_KEY = "depth_completion_ros.rate_hz"
"""Bag metadata custom_data key of the frame rate written by `depth-completion kitti-to-bag --rate-hz`."""


def message_class(msgtype: str) -> Any:
    """'sensor_msgs/msg/Image' (or ROS 1 'sensor_msgs/Image') -> the rclpy message class."""
    parts = msgtype.split("/")
    pkg, name = parts[0], parts[-1]
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def frame_period_s(reader: Any, connections: Sequence[Any], default_rate_hz: float = DEFAULT_LOOP_RATE_HZ) -> float:
    """The bag's frame period in seconds: its stored rate (`RATE_KEY` in the rosbag2 custom_data), else the
    mean message interval of its busiest topic over the bag's duration, else `1 / default_rate_hz`."""
    for sub in getattr(reader, "readers", [reader]):
        custom = getattr(getattr(getattr(sub, "storage", None), "metadata", None), "custom", None) or {}
        try:
            rate = float(custom.get(RATE_KEY, "nan"))
        except (TypeError, ValueError):
            continue
        if rate > 0:  # NaN compares False
            return 1.0 / rate
    busiest = max((int(getattr(c, "msgcount", 0)) for c in connections), default=0)
    span_ns = int(reader.end_time) - int(reader.start_time) - 1  # rosbags: end_time = last stamp + 1 ns
    if busiest > 1 and span_ns > 0:
        return span_ns / 1e9 / (busiest - 1)
    return 1.0 / default_rate_hz


class BagPlayer:
    """Publishes a bag's messages with their recorded timing; `play()` blocks until done or `stop()`.

    `clock` (seconds, monotonic) and `sleep` can be replaced (tests); `sleep` returns early on `stop()`.
    """

    def __init__(
        self,
        node: Any,
        bag: Path,
        *,
        rate: float = 1.0,
        loop: bool = False,
        start_offset: float = 0.0,
        topics: Sequence[str] | None = None,
        clock_hz: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        checks = (("rate", rate, None), ("start_offset", start_offset, 0.0), ("clock_hz", clock_hz, 0.0))
        for name, value, low in checks:
            if not math.isfinite(value) or (low is None and value <= 0) or (low is not None and value < low):
                raise ValueError(f"{name} must be a finite number {'> 0' if low is None else '>= 0'}, got {value}")
        self.node = node
        self.rate = float(rate)
        self.loop = loop
        self.start_offset_ns = int(start_offset * 1e9)
        self.clock_hz = float(clock_hz)
        self._stop = threading.Event()
        self._clock = clock
        self._sleep = self._stop.wait if sleep is None else sleep
        self._ros2_types = get_typestore(Stores.ROS2_KILTED)
        self._reader = AnyReader([Path(bag)], default_typestore=self._ros2_types)
        self._reader.open()
        wanted = set(topics or [])
        self._connections = [c for c in self._reader.connections if not wanted or c.topic in wanted]
        if not self._connections:
            raise ValueError(f"no topics to play in {bag} (asked for {sorted(wanted)})")
        self._publishers: dict[str, Any] = {}
        skipped = []
        for conn in self._connections:
            if conn.topic in self._publishers:
                continue
            try:
                cls = message_class(conn.msgtype)
            except (ImportError, AttributeError):
                skipped.append(f"{conn.topic} ({conn.msgtype})")
                continue
            self._publishers[conn.topic] = node.create_publisher(cls, conn.topic, self._qos_for(conn))
        if skipped:
            node.get_logger().warning(f"message types not installed, not replayed: {', '.join(skipped)}")
        self._connections = [c for c in self._connections if c.topic in self._publishers]
        self.loop_period_s = frame_period_s(self._reader, self._connections)
        """Gap between the last message of a pass and the first of the next (bag time, seconds)."""
        if not self._connections:  # an empty selection would make the reader return every connection
            raise ValueError(f"no topic of {bag} has an installed message type: {', '.join(skipped)}")
        self._clock_pub = None
        if self.clock_hz > 0:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = node.create_publisher(Clock, "/clock", 10)
        self.published = 0

    @staticmethod
    def _qos_for(conn: Any) -> Any:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        latched = (
            any(
                getattr(getattr(q, "durability", None), "name", "") == "TRANSIENT_LOCAL"
                for q in getattr(getattr(conn, "ext", None), "offered_qos_profiles", []) or []
            )
            or conn.topic == "/tf_static"
        )
        if latched:
            return QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
            )
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

    def _payload(self, conn: Any, raw: bytes) -> bytes:
        """CDR bytes to publish: stored as-is for ROS 2 bags; ROS 1 bags converted to the ROS 2 type (no Header.seq)."""
        return raw if self._reader.is2 else bytes(self._ros2_types.ros1_to_cdr(raw, conn.msgtype))

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` until every replayed topic (but latched ones) has a subscriber; True if so."""
        deadline = self._clock() + timeout_s
        waiting = [pub for topic, pub in self._publishers.items() if topic != "/tf_static"]
        while any(pub.get_subscription_count() == 0 for pub in waiting):
            if self._clock() >= deadline or self._stop.is_set():
                return False
            self._sleep(0.05)
        return True

    def stop(self) -> None:
        """Stop playing (from any thread)."""
        self._stop.set()

    def play(self) -> int:
        """Replay (looping if asked); returns the number of messages published."""
        start_ns = self._reader.start_time + self.start_offset_ns
        wall0 = self._clock()
        while not self._stop.is_set():
            next_clock = 0.0
            last_ns = start_ns
            for conn, t_ns, raw in self._reader.messages(connections=self._connections, start=start_ns):
                due = wall0 + (t_ns - start_ns) / 1e9 / self.rate
                last_ns = t_ns
                while not self._stop.is_set():
                    now = self._clock()
                    if self._clock_pub is not None and now >= next_clock:
                        self._publish_clock(start_ns + int((now - wall0) * self.rate * 1e9))
                        next_clock = now + 1.0 / self.clock_hz
                    wait = due - now
                    if wait <= 0:
                        break
                    self._sleep(min(wait, 0.01 if self._clock_pub is not None else wait))
                if self._stop.is_set():
                    break
                self._publishers[conn.topic].publish(self._payload(conn, raw))
                self.published += 1
            if not self.loop:
                break
            # the next pass starts one frame period after this pass's last message (bag time / rate)
            # (never in the past: a player that fell behind does not burst to catch up)
            wall0 = max(wall0 + ((last_ns - start_ns) / 1e9 + self.loop_period_s) / self.rate, self._clock())
        return self.published

    def _publish_clock(self, t_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(t_ns), 1_000_000_000)
        self._clock_pub.publish(msg)

    def close(self) -> None:
        """Close the bag."""
        self._reader.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options (shared by `bag_player` and `depth-completion play`)."""
    from depth_completion_ros.tools.argtypes import nonneg_float, positive_float

    parser.add_argument("bag", type=Path, help="rosbag2 directory / file, or ROS 1 .bag")
    parser.add_argument("--rate", type=positive_float, default=1.0, help="rate factor (2 = twice as fast)")
    parser.add_argument("--loop", action="store_true", help="replay forever")
    parser.add_argument("--start-offset", type=nonneg_float, default=0.0, help="seconds into the bag to start")
    parser.add_argument("--topics", nargs="+", help="only these topics")
    parser.add_argument("--delay", type=nonneg_float, default=0.0, help="seconds to wait before playing (discovery)")
    parser.add_argument(
        "--wait-subscribers",
        type=nonneg_float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds until every replayed topic has a subscriber (no first frames lost)",
    )
    parser.add_argument("--clock", type=nonneg_float, nargs="?", const=100.0, default=0.0, help="publish /clock at HZ")


def run(args: argparse.Namespace, ros_args: Sequence[str] | None = None) -> int:
    """Play; 0 when done, 2 on a bad bag or option, 130 on SIGINT."""
    import rclpy
    from rosbags.highlevel import AnyReaderError

    from depth_completion_ros.core.allocator import configure_allocator

    configure_allocator()
    with rclpy.init(args=list(ros_args or [])):
        node = rclpy.create_node("bag_player")
        try:
            player = BagPlayer(
                node,
                args.bag,
                rate=args.rate,
                loop=args.loop,
                start_offset=args.start_offset,
                topics=args.topics,
                clock_hz=args.clock,
            )
        except (ValueError, OSError, AnyReaderError) as exc:
            node.get_logger().error(f"cannot play {args.bag}: {exc}")
            return 2
        # Publishing needs no executor: the node has no callbacks.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: player.stop())
        if args.loop:
            node.get_logger().info(f"looping; frame period {player.loop_period_s * 1000:.1f} ms between passes")
        if args.wait_subscribers > 0:
            if player.wait_for_subscribers(args.wait_subscribers):
                time.sleep(0.3)  # let the subscribers' side of the match settle too
            else:
                node.get_logger().warning(f"not every topic has a subscriber after {args.wait_subscribers} s: playing")
        if args.delay > 0:
            time.sleep(args.delay)
        t0 = time.monotonic()
        try:
            count = player.play()
        except (ValueError, OSError, AnyReaderError) as exc:  # a bag corrupt past its index
            node.get_logger().error(f"stopped playing {args.bag} after {player.published} messages: {exc}")
            player.close()
            return 2
        time.sleep(0.2)  # let the last messages leave before the node goes away
        node.get_logger().info(f"played {count} messages in {time.monotonic() - t0:.2f} s")
        player.close()
        node.destroy_node()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `ros2 run depth_completion_ros bag_player BAG [options] [--ros-args ...]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args: list[str] = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    parser = argparse.ArgumentParser(prog="bag_player", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv), ros_args)


if __name__ == "__main__":
    sys.exit(main())
