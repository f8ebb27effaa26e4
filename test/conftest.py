"""Shared fixtures: the real data in ../shared/data (skipped cleanly when absent) and seeded RNGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DEPTH_COMPLETION_DATA") or REPO_ROOT.parent / "shared" / "data")
"""The data folder: $DEPTH_COMPLETION_DATA (as the tools read it), else ../shared/data beside the checkout."""


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test when that file is not on this machine."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def kitti_dc_dir() -> Path:
    """../shared/data/kitti_dc_frame (skips when absent)."""
    return shared_path("kitti_dc_frame")


@pytest.fixture
def tum_dir() -> Path:
    """../shared/data/tum_rgbd_frame (skips when absent)."""
    return shared_path("tum_rgbd_frame")


@pytest.fixture
def kitti_object_dir() -> Path:
    """../shared/data/kitti_object_frame (skips when absent)."""
    return shared_path("kitti_object_frame")


@pytest.fixture
def luminar_bag() -> Path:
    """../shared/data/luminar_pointcloud_bag/test.bag (skips when absent)."""
    return shared_path("luminar_pointcloud_bag", "test.bag")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so failures reproduce."""
    return np.random.default_rng(12345)
