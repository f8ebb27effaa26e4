"""ApproximateTimeSync: message_filters ApproximateTimeSynchronizer semantics, without rclpy.

The comparison with upstream runs when `message_filters` is importable, or when the environment variable
DCR_UPSTREAM_MESSAGE_FILTERS names a directory holding the pure-Python `message_filters/__init__.py` of
ros2/message_filters (it imports rclpy); otherwise it skips.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from depth_completion_ros.ros.sync import ApproximateTimeSync, stamp_to_ns


def _msg(t_ns: int, tag: str = "") -> SimpleNamespace:
    stamp = SimpleNamespace(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp), tag=tag)


MS = 1_000_000


def test_stamp_to_ns_message_and_time_like():
    assert stamp_to_ns(SimpleNamespace(sec=3, nanosec=25)) == 3_000_000_025
    assert stamp_to_ns(SimpleNamespace(nanoseconds=42)) == 42


def test_pairs_within_slop_match_beyond_do_not():
    out: list[tuple] = []
    sync = ApproximateTimeSync(2, 10, 0.05, lambda a, b: out.append((a, b)))
    a = _msg(1000 * MS, "a0")
    b_far = _msg(1060 * MS, "b_far")  # 60 ms > 50 ms slop
    assert sync.add(0, a) is None
    assert sync.add(1, b_far) is None
    assert out == []
    b_near = _msg(1030 * MS, "b_near")  # 30 ms < slop
    matched = sync.add(1, b_near)
    assert matched == (a, b_near)
    assert out == [(a, b_near)]
    # a0 and b_near left the queues, b_far still waits
    assert sync.queue_lengths() == [0, 1]


def test_spread_equal_to_slop_does_not_match():
    # upstream keeps candidates with |dt| <= slop but needs max - min < slop (strict)
    sync = ApproximateTimeSync(2, 5, 0.1)
    sync.add(0, _msg(0))
    assert sync.add(1, _msg(100 * MS)) is None
    assert sync.add(1, _msg(99 * MS)) is not None


def test_nearest_candidate_wins():
    sync = ApproximateTimeSync(2, 10, 0.1)
    for t in (0, 40, 80):
        sync.add(1, _msg(t * MS, f"b{t}"))
    matched = sync.add(0, _msg(70 * MS, "a"))
    assert matched is not None
    assert matched[1].tag == "b80"  # |80-70| = 10 ms is nearest


def test_queue_bound_drops_oldest():
    sync = ApproximateTimeSync(2, 3, 0.01)
    for k in range(10):
        sync.add(0, _msg(k * 1000 * MS))  # 1 s apart: never match each other
    assert sync.queue_lengths() == [3, 0]
    # the three newest survive: 7, 8, 9 s; 2 s is gone
    assert sync.add(1, _msg(2000 * MS)) is None
    assert sync.add(1, _msg(9000 * MS + 1)) is not None


def test_same_stamp_replaces():
    sync = ApproximateTimeSync(2, 5, 0.01)
    sync.add(0, _msg(5 * MS, "old"))
    sync.add(0, _msg(5 * MS, "new"))
    assert sync.queue_lengths() == [1, 0]
    matched = sync.add(1, _msg(5 * MS))
    assert matched is not None
    assert matched[0].tag == "new"


def test_three_inputs_need_all():
    sync = ApproximateTimeSync(3, 5, 0.05)
    assert sync.add(0, _msg(0)) is None
    assert sync.add(1, _msg(10 * MS)) is None
    matched = sync.add(2, _msg(20 * MS))
    assert matched is not None
    assert [stamp_to_ns(m.header.stamp) for m in matched] == [0, 10 * MS, 20 * MS]


def test_headerless_ignored():
    sync = ApproximateTimeSync(2, 5, 0.05)
    assert sync.add(0, SimpleNamespace(data=1)) is None
    assert sync.queue_lengths() == [0, 0]


@pytest.mark.parametrize(("n", "q", "slop"), [(1, 5, 0.1), (2, 0, 0.1), (2, 5, -0.1), (2, 5, float("nan"))])
def test_invalid_arguments(n, q, slop):
    with pytest.raises(ValueError, match=r"n_inputs|queue_size|slop"):
        ApproximateTimeSync(n, q, slop)


def _reference_matches(events, n_inputs, queue_size, slop_ns):
    """Brute-force reference written from the documented semantics (independent of sync.py's loops)."""
    queues = [dict() for _ in range(n_inputs)]
    out = []
    for index, t in events:
        queues[index][t] = t
        while len(queues[index]) > queue_size:
            queues[index].pop(min(queues[index]))
        lists = []
        for i in range(n_inputs):
            if i == index:
                lists.append([t])
            else:
                lists.append(sorted((s for s in queues[i] if abs(s - t) <= slop_ns), key=lambda s: abs(s - t)))
        found = None
        for combo in itertools.product(*lists):
            if max(combo) - min(combo) < slop_ns:
                found = combo
                break
        if found is not None:
            for i, s in enumerate(found):
                queues[i].pop(s)
            out.append(tuple(found))
    return out


def _random_events(rng, n_inputs, count):
    """Interleaved streams at ~10 Hz with jitter, random arrival order, occasional drops."""
    events = []
    for i in range(n_inputs):
        base = rng.integers(0, 30) * MS
        for k in range(count):
            if rng.random() < 0.15:
                continue
            events.append((i, int(base + k * 100 * MS + rng.integers(-20, 20) * MS)))
    order = np.argsort([t + rng.integers(0, 60) * MS for _, t in events], kind="stable")
    return [events[j] for j in order]


@pytest.mark.parametrize("n_inputs", [2, 3])
def test_random_streams_match_reference(rng, n_inputs):
    events = _random_events(rng, n_inputs, 60)
    got = []
    sync = ApproximateTimeSync(n_inputs, 4, 0.03, lambda *m: got.append(tuple(stamp_to_ns(x.header.stamp) for x in m)))
    for index, t in events:
        sync.add(index, _msg(t))
    expected = _reference_matches(events, n_inputs, 4, int(0.03 * 1e9))
    assert len(expected) > 10  # the scenario exercises matching
    assert got == expected


def _upstream_message_filters() -> ModuleType:
    from depth_completion_ros.ros.compat import message_filters

    if message_filters is not None:
        return message_filters
    root = os.environ.get("DCR_UPSTREAM_MESSAGE_FILTERS")
    if not root or not (Path(root) / "message_filters" / "__init__.py").is_file():
        pytest.skip("upstream message_filters not importable (set DCR_UPSTREAM_MESSAGE_FILTERS to compare)")
    pytest.importorskip("rclpy")
    spec = importlib.util.spec_from_file_location(
        "_upstream_message_filters", Path(root) / "message_filters" / "__init__.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["_upstream_message_filters"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("n_inputs", "queue_size", "slop"), [(2, 1, 0.05), (2, 4, 0.03), (3, 3, 0.04), (2, 10, 0.3)])
def test_same_as_upstream_message_filters(rng, n_inputs, queue_size, slop):
    mf = _upstream_message_filters()
    events = _random_events(rng, n_inputs, 80)
    filters = [mf.SimpleFilter() for _ in range(n_inputs)]
    upstream = mf.ApproximateTimeSynchronizer(filters, queue_size, slop)
    up_out: list[tuple] = []
    upstream.registerCallback(lambda *m: up_out.append(tuple(stamp_to_ns(x.header.stamp) for x in m)))
    ours_out: list[tuple] = []
    ours = ApproximateTimeSync(
        n_inputs, queue_size, slop, lambda *m: ours_out.append(tuple(stamp_to_ns(x.header.stamp) for x in m))
    )
    from builtin_interfaces.msg import Time  # upstream requires the real stamp type

    for index, t in events:
        msg = _msg(t)
        msg.header.stamp = Time(sec=t // 1_000_000_000, nanosec=t % 1_000_000_000)
        filters[index].signalMessage(msg)
        ours.add(index, msg)
    assert len(up_out) > 5
    assert ours_out == up_out
