"""configure_allocator: glibc accepts the settings on Linux and the call is idempotent."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from depth_completion_ros.core.allocator import configure_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_configure_allocator_is_accepted_and_idempotent() -> None:
    assert configure_allocator() is True
    assert configure_allocator() is True
    a = np.ones((375, 1242), np.float32)  # allocation still works and is usable
    assert float(a.sum()) == 375 * 1242
