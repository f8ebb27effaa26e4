"""core/files.py: atomic writes (the previous file survives a failed write, no temporary left) and image reads
bounded by the size in the header (decompression bombs are refused before decoding)."""

from __future__ import annotations

import errno
import os
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_completion_ros.core import files
from depth_completion_ros.core.errors import DataError, ShapeError


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_output_keeps_the_previous_file_when_the_write_fails(tmp_path):
    target = tmp_path / "depth.png"
    target.write_bytes(b"previous")
    with pytest.raises(OSError), files.atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []


def test_atomic_output_replaces_and_keeps_suffix(tmp_path):
    target = tmp_path / "sub" / "a.json"
    with files.atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json" and tmp != target
        tmp.write_text("{}")
    assert target.read_text() == "{}"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert _leftovers(target.parent) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("bad", ["dir", "device", "noext", "jpg"])
def test_write_image_refuses_paths_that_cannot_hold_depth(tmp_path, bad):
    depth = np.full((4, 5), 1000, np.uint16)
    path = {"dir": tmp_path, "device": Path("/dev/null"), "noext": tmp_path / "out", "jpg": tmp_path / "d.jpg"}[bad]
    with pytest.raises(DataError):
        files.write_image(path, depth)
    assert Path("/dev/null").is_char_device()  # never replaced by a regular file
    assert _leftovers(tmp_path) == []


def test_write_image_round_trip_png_and_tiff(tmp_path):
    depth = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    for name in ("d.png", "d.tiff"):
        files.write_image(tmp_path / name, depth)
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED), depth)


def test_atomic_directory_removes_a_failed_folder(tmp_path):
    out = tmp_path / "bag"
    with pytest.raises(RuntimeError), files.atomic_directory(out) as tmp:
        tmp.mkdir()
        (tmp / "part.mcap").write_bytes(b"x")
        raise RuntimeError("conversion failed")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with files.atomic_directory(out) as tmp:
        assert tmp.name == "bag"
        tmp.mkdir()
        (tmp / "bag.mcap").write_bytes(b"y")
    assert (out / "bag.mcap").read_bytes() == b"y"
    assert [p.name for p in tmp_path.iterdir()] == ["bag"]
    with pytest.raises(DataError, match="exists"), files.atomic_directory(out):
        pass


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit gray) with one short IDAT: decoding would allocate."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_read_image_refuses_a_header_beyond_the_limit(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(60_000, 60_000))
    assert files.image_size(bomb) == (60_000, 60_000)
    with pytest.raises(ShapeError, match="exceeds the limit"):
        files.read_image(bomb)


def test_read_image_refuses_a_real_bomb_before_decoding(tmp_path):
    """64 MP of zeros compress to ~64 kB; the limit (50 MP) refuses it from the header."""
    big = np.zeros((8000, 8000), np.uint8)
    ok, buf = cv2.imencode(".png", big)
    assert ok and len(buf) < 200_000
    path = tmp_path / "zeros.png"
    path.write_bytes(buf.tobytes())
    del big
    with pytest.raises(ShapeError, match="8000x8000"):
        files.read_image(path, cv2.IMREAD_COLOR)
    small = files.read_image(path, max_pixels=64_000_000)  # the limit is a parameter
    assert small.shape == (8000, 8000)


def test_image_size_reads_jpeg_headers(tmp_path):
    img = np.zeros((37, 53, 3), np.uint8)
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), img)
    assert files.image_size(path) == (53, 37)
    (tmp_path / "t.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00")
    with pytest.raises(DataError, match="corrupt or unreadable"):
        files.read_image(tmp_path / "t.jpg")


def test_read_kitti_scan_checks_the_size(tmp_path):
    scan = tmp_path / "s.bin"
    np.arange(16, dtype=np.float32).tofile(scan)
    assert files.read_kitti_scan(scan).shape == (4, 4)
    scan.write_bytes(scan.read_bytes()[:-5])
    with pytest.raises(DataError, match="not a whole number of points"):
        files.read_kitti_scan(scan)
    with pytest.raises(DataError, match="exceeds the limit"):
        np.zeros(64, np.float32).tofile(scan)
        files.read_kitti_scan(scan, max_points=8)
