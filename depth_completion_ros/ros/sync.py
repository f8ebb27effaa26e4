"""Approximate-time synchronization of several message streams (message_filters semantics).

`ApproximateTimeSync` is a pure-Python equivalent of the Python `message_filters.ApproximateTimeSynchronizer`
(ros2/message_filters, src/message_filters/__init__.py), written from its documented behaviour:

- each input keeps at most `queue_size` messages keyed by header stamp (nanoseconds); a message with the
  stamp of one already queued replaces it; beyond `queue_size` the oldest stamp is dropped;
- when a message arrives, only sets that contain *it* are considered: for every other input the queued
  stamps within `slop` of the new one are candidates, tried nearest first (product over the inputs,
  lexicographic); the first combination whose spread (max - min stamp) is strictly below `slop` is emitted
  and its messages leave the queues; unmatched older messages stay queued until pushed out;
- messages without `header.stamp` are ignored (upstream logs a warning; `allow_headerless` is not
  supported here).

Accounting: `unmatched[i]` counts the messages of input i that left the queues without joining a set (pushed
out by `queue_size`, or replaced by a message with the same stamp); `queue_lengths()` the ones still waiting.
So for every input, received = matched + unmatched + waiting.

It needs no rclpy; `subscribe_synchronized` wires it (or upstream message_filters when importable) to a node.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "ApproximateTimeSync",
    "SyncInput",
    "stamp_to_ns",
    "subscribe_synchronized",
]


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a `builtin_interfaces/Time` message (sec, nanosec) or an `rclpy.time.Time` (nanoseconds)."""
    nanoseconds = getattr(stamp, "nanoseconds", None)
    if nanoseconds is not None:
        return int(nanoseconds)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class ApproximateTimeSync:
    """Approximate-time matcher over `n_inputs` streams; thread-safe; no ROS dependency.

    Args:
        n_inputs: number of input streams (>= 2).
        queue_size: messages kept per input (>= 1).
        slop: seconds; a set matches when max - min stamp < slop (candidates within <= slop).
        callback: called with one message per input, in input order, for each matched set.
    """

    def __init__(
        self,
        n_inputs: int,
        queue_size: int,
        slop: float,
        callback: Callable[..., None] | None = None,
    ) -> None:
        if n_inputs < 2:
            msg = f"n_inputs must be >= 2, got {n_inputs}"
            raise ValueError(msg)
        if queue_size < 1:
            msg = f"queue_size must be >= 1, got {queue_size}"
            raise ValueError(msg)
        if not slop >= 0.0:
            msg = f"slop must be >= 0 seconds, got {slop}"
            raise ValueError(msg)
        self.queue_size = int(queue_size)
        self.slop_ns = int(float(slop) * 1_000_000_000)  # as rclpy Duration(seconds=slop)
        self._queues: list[dict[int, Any]] = [{} for _ in range(n_inputs)]
        self.unmatched: list[int] = [0] * n_inputs
        """Per input: messages that left the queues without joining a set."""
        self._callbacks: list[Callable[..., None]] = [] if callback is None else [callback]
        self._lock = threading.Lock()

    @property
    def n_inputs(self) -> int:
        return len(self._queues)

    def register_callback(self, callback: Callable[..., None]) -> None:
        """Also call `callback(*msgs)` for each matched set."""
        self._callbacks.append(callback)

    def newest_stamps(self) -> list[int | None]:
        """Newest queued stamp per input, nanoseconds (None for an empty queue)."""
        with self._lock:
            return [max(q) if q else None for q in self._queues]

    def queue_lengths(self) -> list[int]:
        """Messages currently waiting per input."""
        with self._lock:
            return [len(q) for q in self._queues]

    def add(self, index: int, msg: Any) -> tuple[Any, ...] | None:
        """Offer `msg` on input `index`; returns the matched set (and signals callbacks) or None."""
        header = getattr(msg, "header", None)
        stamp = getattr(header, "stamp", None)
        if stamp is None:
            return None
        t_ns = stamp_to_ns(stamp)
        with self._lock:
            matched = self._add_locked(index, t_ns, msg)
        if matched is not None:
            for callback in list(self._callbacks):
                callback(*matched)
        return matched

    def _add_locked(self, index: int, t_ns: int, msg: Any) -> tuple[Any, ...] | None:
        queue = self._queues[index]
        if t_ns in queue:
            self.unmatched[index] += 1  # replaced by a message with the same stamp
        queue[t_ns] = msg
        while len(queue) > self.queue_size:
            del queue[min(queue)]
            self.unmatched[index] += 1
        others = [i for i in range(len(self._queues)) if i != index]
        candidates: list[list[int]] = []
        for i in others:
            near = [
                (abs(s - t_ns), order, s) for order, s in enumerate(self._queues[i]) if abs(s - t_ns) <= self.slop_ns
            ]
            if not near:
                return None
            near.sort()  # nearest first; ties keep queue (insertion) order
            candidates.append([s for _, _, s in near])
        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(index, t_ns)
            if max(stamps) - min(stamps) < self.slop_ns:
                msgs = tuple(q.pop(s) for q, s in zip(self._queues, stamps, strict=True))
                return msgs
        return None


class SyncInput:
    """One synchronized input: `(msg_type, topic, qos)`; `on_receive(msg)` is called on every receipt."""

    def __init__(self, msg_type: type, topic: str, qos: Any, on_receive: Callable[[Any], None] | None = None) -> None:
        self.msg_type = msg_type
        self.topic = topic
        self.qos = qos
        self.on_receive = on_receive


def subscribe_synchronized(
    node: Any,
    inputs: Sequence[SyncInput],
    queue_size: int,
    slop: float,
    callback: Callable[..., None],
    *,
    callback_group: Any = None,
    prefer_upstream: bool = True,
    on_error: Callable[[str, BaseException], None] | None = None,
) -> tuple[Any, list[Any]]:
    """Subscribe `node` to `inputs` and call `callback(*msgs)` for approximately synchronized sets.

    Uses `message_filters.Subscriber` + `ApproximateTimeSynchronizer` when message_filters is importable
    (and `prefer_upstream`), else rclpy subscriptions feeding `ApproximateTimeSync`.  An exception in a receive
    callback, the matcher or `callback` is handed to `on_error(topic, exc)` (never escapes to the executor);
    without `on_error` it propagates.

    Returns:
        (synchronizer, subscriptions-or-filters), to keep alive for the node's lifetime.
    """
    from depth_completion_ros.ros.compat import message_filters

    def contained(fn: Callable[..., None], what: str) -> Callable[..., None]:
        if on_error is None:
            return fn

        def _call(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:
                on_error(what, exc)

        return _call

    if prefer_upstream and message_filters is not None:
        filters = []
        for spec in inputs:
            sub = message_filters.Subscriber(
                node, spec.msg_type, spec.topic, qos_profile=spec.qos, callback_group=callback_group
            )
            if spec.on_receive is not None:
                sub.registerCallback(contained(spec.on_receive, spec.topic))
            filters.append(sub)
        sync = message_filters.ApproximateTimeSynchronizer(filters, queue_size, slop)
        sync.registerCallback(contained(callback, "synchronized"))
        return sync, filters

    sync_ = ApproximateTimeSync(len(inputs), queue_size, slop, callback)
    subs = []
    for index, spec in enumerate(inputs):

        def _receive(msg: Any, index: int = index, spec: SyncInput = spec) -> None:
            try:
                if spec.on_receive is not None:
                    spec.on_receive(msg)
                sync_.add(index, msg)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(spec.topic, exc)

        subs.append(
            node.create_subscription(spec.msg_type, spec.topic, _receive, spec.qos, callback_group=callback_group)
        )
    return sync_, subs
