"""Environment for child ROS 2 processes (nodes, players, test peers) that must talk to each other.

Measured on the PyPI (Kilted wheels) setup: Fast DDS's default transports drop large images and clouds
between processes on loopback; a shared-memory-only profile (`config/fastdds_shm.xml`) with a random
domain id and localhost discovery delivered everything.  `ros_process_env()` builds that environment.

This module imports no rclpy, so it is cheap to import from tests and tools.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "DOMAIN_ID_RANGE",
    "PACKAGE",
    "fastdds_profile_path",
    "package_share_path",
    "random_domain_id",
    "ros_process_env",
]

PACKAGE = "depth_completion_ros"

DOMAIN_ID_RANGE = (1, 101)
"""Inclusive range of random domain ids: 0 is the default everyone uses; >101 collides with ports on Linux."""

_PROFILE_NAME = "fastdds_shm.xml"

_SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""Repository root when running from the source tree (or an editable install)."""


def package_share_path(relative: str) -> Path:
    """Absolute path of a file of this package's share dir (`config/...`, `launch/...`).

    Order: the source tree beside this module (editable install / checkout), then
    `ament_index_python.get_package_share_directory` (colcon / installed share), then
    `<sys.prefix>/share/depth_completion_ros`.

    Raises:
        FileNotFoundError: the file is in none of them.
    """
    candidates: list[Path] = []
    for candidate_dir in (lambda: _SOURCE_ROOT, _ament_share_dir, lambda: Path(sys.prefix) / "share" / PACKAGE):
        base = candidate_dir()
        if base is None:
            continue
        candidate = base / relative
        candidates.append(candidate)
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    msg = f"{relative!r} of package {PACKAGE} not found (tried: {tried})"
    raise FileNotFoundError(msg)


def _ament_share_dir() -> Path | None:
    """The package's share dir from the ament index, or None (no ament_index_python / not indexed)."""
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (LookupError, ValueError, OSError):  # PackageNotFoundError is a KeyError; unset AMENT_PREFIX_PATH
        return None


def fastdds_profile_path() -> Path:
    """Absolute path of `config/fastdds_shm.xml` (SHM transport only, 64 MB segment, 16 MB max message)."""
    return package_share_path(f"config/{_PROFILE_NAME}")


def random_domain_id() -> int:
    """A random ROS domain id in `DOMAIN_ID_RANGE`, independent of the seeded `random` module state."""
    return random.SystemRandom().randint(*DOMAIN_ID_RANGE)


def ros_process_env(
    domain_id: int | None = None,
    *,
    ros_home: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A copy of `base` (default `os.environ`) set up for isolated, lossless local ROS 2 communication.

    Sets `ROS_DOMAIN_ID` (given or random), `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`,
    `RMW_IMPLEMENTATION=rmw_fastrtps_cpp`, `FASTDDS_DEFAULT_PROFILES_FILE` (the SHM-only profile),
    `ROS_HOME` (given, else a fresh temporary directory so logs stay out of `~/.ros`),
    `AMENT_PREFIX_PATH` (the venv prefix is appended when missing, for ament_index / launch_ros), unbuffered
    Python output and uncoloured, unbuffered ROS logging (for reading logs in tests). Removes
    `ROS_LOCALHOST_ONLY` (deprecated, ignored by this build) and `FASTDDS_BUILTIN_TRANSPORTS` (would
    override the profile). Processes must share the same domain id, and therefore the same returned
    dict (or one built with the same `domain_id`), to see each other.

    Raises:
        ValueError: `domain_id` outside 0..232.
    """
    if domain_id is None:
        domain_id = random_domain_id()
    if not 0 <= int(domain_id) <= 232:
        msg = f"domain_id must be in 0..232, got {domain_id}"
        raise ValueError(msg)
    env = dict(os.environ if base is None else base)
    for key in ("ROS_LOCALHOST_ONLY", "FASTDDS_BUILTIN_TRANSPORTS", "ROS_STATIC_PEERS"):
        env.pop(key, None)
    if ros_home is None:
        ros_home = tempfile.mkdtemp(prefix="dcr_ros_home_")
    prefix = sys.prefix
    ament = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if prefix not in ament:
        ament.append(prefix)
    env.update(
        {
            "ROS_DOMAIN_ID": str(int(domain_id)),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
            "FASTDDS_DEFAULT_PROFILES_FILE": str(fastdds_profile_path()),
            "ROS_HOME": str(ros_home),
            "ROS_LOG_DIR": str(Path(ros_home) / "log"),
            "AMENT_PREFIX_PATH": os.pathsep.join(ament),
            "PYTHONUNBUFFERED": "1",
            "RCUTILS_COLORIZED_OUTPUT": "0",
            "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
        }
    )
    return env
