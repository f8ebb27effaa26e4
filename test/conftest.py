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


@pytest.fixture
def tiny_arch():
    """A tiny published architecture "tiny-test" (K-aware, stride 4), registered for the test and removed after.

    Authors' key convention it imitates: "backbone.*" -> ours "net.*", "unused_buffer" dropped.
    """
    import dataclasses
    from collections.abc import Mapping
    from typing import Any

    import torch
    from torch import nn

    from depth_completion_ros.core.published.base import ARCHITECTURES, Architecture, register

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class TinyConfig:
        width: int = 4

        def to_dict(self) -> dict[str, Any]:
            return {"width": self.width}

    def from_dict(d: Mapping[str, Any]) -> TinyConfig:
        if not isinstance(d, Mapping) or set(d) - {"width"}:
            raise ValueError(f"unknown fields {sorted(set(d) - {'width'})}")
        w = d.get("width", 4)
        if not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= 64:
            raise ValueError(f"width must be an int in [1, 64], got {w!r}")
        return TinyConfig(width=w)

    class TinyNet(nn.Module):
        def __init__(self, cfg: TinyConfig) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(5, cfg.width, 3, padding=1), nn.BatchNorm2d(cfg.width), nn.ReLU())
            self.head = nn.Conv2d(cfg.width, 1, 1)

        def forward(self, rgb, sparse, K):
            if K is None:
                raise ValueError("tiny-test needs K")
            h, w = sparse.shape[-2:]
            ph, pw = (-h) % 4, (-w) % 4
            x = torch.cat([rgb / 255.0, sparse, sparse * K[:, 0, 0].view(-1, 1, 1, 1) / 1000.0], 1)
            x = nn.functional.pad(x, (0, pw, 0, ph))
            y = self.head(self.net(x))[..., :h, :w]
            pred = nn.functional.softplus(y) + sparse.amax(dim=(2, 3), keepdim=True) * 0.5
            return {"pred": pred, "confidence": None}

    def authors_key(k: str) -> str | None:
        if k == "unused_buffer":
            return None
        return "net." + k.removeprefix("backbone.") if k.startswith("backbone.") else k

    arch = Architecture(
        name="tiny-test",
        title="tiny test net",
        training_data="none",
        needs_intrinsics=True,
        stride=4,
        config_from_dict=from_dict,
        default_config=TinyConfig(),
        build=lambda cfg: TinyNet(cfg).eval(),
        authors_key=authors_key,
        manifest="tiny-test.json",
    )
    register(arch)
    yield arch
    ARCHITECTURES.pop("tiny-test", None)
