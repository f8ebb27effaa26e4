"""Fixtures for tests that start real ROS 2 node processes and talk to them over DDS.

- `ros_env`: an isolated environment (random `ROS_DOMAIN_ID`, localhost discovery, SHM-only Fast DDS profile,
  `ROS_HOME` under tmp_path) from `depth_completion_ros.ros.process_env.ros_process_env`.
- `start_node`: factory starting `python -m depth_completion_ros.ros.<module> --ros-args ...` under `ros_env`;
  stops every started process (SIGINT, then SIGKILL) at teardown.  Its output goes to a log file that
  `NodeProcess.wait_for_log` polls.
- `ros_peer`: rclpy in the test process on the same domain (its own Context; the environment variables that
  rclpy / Fast DDS read at init are set with monkeypatch first), with a background executor thread;
  `publisher(...)` and `collector(...)` make publishers and message collectors.

Test modules must not import this file; they receive these objects through the fixtures.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

rclpy = pytest.importorskip("rclpy")


class NodeProcess:
    """A node started as a child process; stdout+stderr go to `log_path`."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log_file = log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, cwd=REPO_ROOT, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 20.0, *, start: int = 0) -> re.Match[str]:
        """Wait until `pattern` (regex) appears in the output after character `start`; fail on timeout/exit."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            text = self.output()
            match = regex.search(text, start)
            if match:
                return match
            if self.proc.poll() is not None:
                pytest.fail(f"process exited ({self.proc.returncode}) before {pattern!r}:\n{text[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"timeout waiting for {pattern!r} in the node's log:\n{text[-4000:]}")
            time.sleep(0.05)

    def count(self, pattern: str, *, start: int = 0) -> int:
        """Number of matches of regex `pattern` in the output after character `start`."""
        return len(re.findall(pattern, self.output()[start:]))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """Send `sig`, wait up to `timeout` s (then SIGKILL); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()
        return self.proc.returncode


@pytest.fixture
def ros_env(tmp_path: Path) -> dict[str, str]:
    """Environment for this test's ROS processes: a fresh random domain id, SHM-only, ROS_HOME in tmp_path."""
    from depth_completion_ros.ros.process_env import ros_process_env

    home = tmp_path / "ros_home"
    home.mkdir()
    return ros_process_env(ros_home=str(home))


@pytest.fixture
def start_node(ros_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Factory: `start_node(module, *ros_args, params=None, params_file=None, remap=None, name=None)`.

    `module` is a module under `depth_completion_ros.ros` (e.g. "depth_completion_node"); `params` maps
    parameter names to values passed as `-p name:=value` (lists/bools in YAML syntax).
    """
    started: list[NodeProcess] = []

    def _start(
        module: str,
        *ros_args: str,
        params: dict[str, Any] | None = None,
        params_file: str | Path | None = None,
        remap: dict[str, str] | None = None,
        name: str | None = None,
    ) -> NodeProcess:
        argv = [PYTHON, "-m", f"depth_completion_ros.ros.{module}", "--ros-args"]
        if params_file is not None:
            argv += ["--params-file", str(params_file)]
        for key, value in (params or {}).items():
            argv += ["-p", f"{key}:={_yaml_value(value)}"]
        for src, dst in (remap or {}).items():
            argv += ["-r", f"{src}:={dst}"]
        if name is not None:
            argv += ["-r", f"__node:={name}"]
        argv += list(ros_args)
        log = tmp_path / f"{module}_{len(started)}.log"
        node = NodeProcess(argv, ros_env, log)
        started.append(node)
        return node

    yield _start
    for node in started:
        node.stop()


def _yaml_value(value: Any) -> str:
    """A parameter value in the YAML syntax that `-p name:=value` parses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value if value else "''"
    return str(value)


def stamp_ns(msg: Any) -> int:
    """Header stamp of `msg` in nanoseconds."""
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class Collector:
    """Messages received on one topic, thread-safe; `wait(n)` blocks until at least n arrived."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.times: list[float] = []
        self._cond = threading.Condition(threading.RLock())

    def __call__(self, msg: Any) -> None:
        with self._cond:
            self.messages.append(msg)
            self.times.append(time.monotonic())
            self._cond.notify_all()

    def wait(self, n: int = 1, timeout: float = 15.0) -> list[Any]:
        """At least `n` messages (all received so far), or fail after `timeout` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= n, timeout):
                pytest.fail(f"received {len(self.messages)} of {n} messages within {timeout} s")
            return list(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()
            self.times.clear()

    @staticmethod
    def stamp_of(msg: Any) -> int:
        """Header stamp of `msg` in nanoseconds (for test modules, which cannot import this file)."""
        return stamp_ns(msg)

    def with_stamp(self, t_ns: int) -> tuple[Any, float] | None:
        """The newest message whose header stamp is `t_ns` (nanoseconds) and its arrival time, or None."""
        with self._cond:
            for msg, at in zip(reversed(self.messages), reversed(self.times), strict=True):
                if stamp_ns(msg) == t_ns:
                    return msg, at
        return None

    def wait_stamp(self, t_ns: int, timeout: float = 20.0) -> tuple[Any, float]:
        """Block until a message stamped `t_ns` arrived: (message, arrival time); fail after `timeout` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.with_stamp(t_ns) is not None, timeout):
                recent = [stamp_ns(m) for m in self.messages[-5:]]
                pytest.fail(f"no message with stamp {t_ns} within {timeout} s (latest: {recent})")
        found = self.with_stamp(t_ns)
        assert found is not None
        return found


class RosPeer:
    """An rclpy node in the test process with its own Context and a background executor."""

    def __init__(self, domain_id: int) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(f"test_peer_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except (ExternalShutdownException, rclpy.executors.ShutdownException):
            pass
        except Exception:  # the context went away under us during teardown
            if self.context.ok():
                raise

    def publisher(self, msg_type: type, topic: str, qos: Any = 10) -> Any:
        return self.node.create_publisher(msg_type, topic, qos)

    def collector(self, msg_type: type, topic: str, qos: Any = 10) -> Collector:
        collector = Collector()
        self.node.create_subscription(msg_type, topic, collector, qos)
        return collector

    def wait_for_subscribers(self, publisher: Any, n: int = 1, timeout: float = 20.0) -> None:
        """Block until `publisher` has >= n matched subscriptions (discovery done)."""
        deadline = time.monotonic() + timeout
        while publisher.get_subscription_count() < n:
            if time.monotonic() > deadline:
                pytest.fail(f"no subscriber on {publisher.topic_name} within {timeout} s")
            time.sleep(0.05)

    def wait_for_publishers(self, topic: str, n: int = 1, timeout: float = 20.0) -> None:
        """Block until `topic` (fully qualified) has >= n publishers."""
        deadline = time.monotonic() + timeout
        while self.node.count_publishers(topic) < n:
            if time.monotonic() > deadline:
                pytest.fail(f"no publisher on {topic} within {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            if self.context.ok():
                rclpy.shutdown(context=self.context)
        self._thread.join(2.0)


@pytest.fixture
def ros_peer(ros_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[RosPeer]:
    """rclpy in the test process on `ros_env`'s domain, with the same transport settings."""
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION", "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_HOME"):
        monkeypatch.setenv(key, ros_env[key])
    for key in ("ROS_LOCALHOST_ONLY", "FASTDDS_BUILTIN_TRANSPORTS", "ROS_STATIC_PEERS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ROS_DOMAIN_ID", ros_env["ROS_DOMAIN_ID"])
    peer = RosPeer(int(ros_env["ROS_DOMAIN_ID"]))
    yield peer
    peer.close()


class MsgFactory:
    """Builds sensor_msgs by hand (independently of depth_completion_ros.ros.conversions)."""

    @staticmethod
    def stamp(t_ns: int) -> Any:
        from builtin_interfaces.msg import Time

        return Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)

    def header(self, t_ns: int, frame: str) -> Any:
        from std_msgs.msg import Header

        return Header(stamp=self.stamp(t_ns), frame_id=frame)

    def image(self, array: Any, t_ns: int, frame: str, encoding: str = "rgb8") -> Any:
        """Image from an (H, W[, C]) array; `encoding` is written as given (bad ones allowed)."""
        import numpy as np
        from sensor_msgs.msg import Image

        arr = np.ascontiguousarray(array)
        msg = Image(header=self.header(t_ns, frame), height=arr.shape[0], width=arr.shape[1], encoding=encoding)
        msg.is_bigendian = 0
        msg.step = arr.strides[0]
        msg.data = arr.tobytes()
        return msg

    def camera_info(
        self, t_ns: int, frame: str, width: int, height: int, fx: float, fy: float, cx: float, cy: float
    ) -> Any:
        from sensor_msgs.msg import CameraInfo

        msg = CameraInfo(header=self.header(t_ns, frame), width=width, height=height)
        msg.distortion_model = "plumb_bob"
        msg.d = [0.0] * 5
        msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return msg

    def cloud(self, points: Any, t_ns: int, frame: str) -> Any:
        """Unorganized PointCloud2 with float32 x, y, z (point_step 12)."""
        import numpy as np
        from sensor_msgs.msg import PointCloud2, PointField

        pts = np.ascontiguousarray(points, dtype=np.float32)
        msg = PointCloud2(header=self.header(t_ns, frame), height=1, width=len(pts))
        msg.fields = [
            PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")
        ]
        msg.is_bigendian = False
        msg.point_step = 12
        msg.row_step = 12 * len(pts)
        msg.is_dense = bool(np.isfinite(pts).all())
        msg.data = pts.tobytes()
        return msg


@pytest.fixture
def msgs() -> MsgFactory:
    """Hand-built sensor messages."""
    return MsgFactory()
