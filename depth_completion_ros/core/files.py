"""Files in one place: atomic writes (temporary file or folder beside the target, then rename) and image reading
bounded by the decoded size read from the file header (no decompression bombs).

Every tool writes its outputs through `atomic_output` / `atomic_directory`, so a failed or interrupted run leaves
the previous output intact and no half-written file; every image is read through `read_image`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from depth_completion_ros.core.errors import DataError, ShapeError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_SCAN_POINTS",
    "atomic_directory",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_image_output",
    "check_image_pixels",
    "image_size",
    "read_image",
    "read_kitti_scan",
    "write_image",
]

MAX_IMAGE_PIXELS = 50_000_000
"""Largest image (width x height, pixels) read or generated: 50 MP, e.g. 8660 x 5773; KITTI is 0.47 MP.  Bounds
the memory a small compressed file can claim (a 2.6 MB PNG can decode to 30000 x 30000).  Pass `max_pixels` to
`read_image` to change it for one call."""

# OpenCV's own bound for the formats whose header is not parsed here (TIFF, WebP, BMP, ...).  Read once by OpenCV at
# its first decode, so it holds when this module is imported before any image is read.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

_LOSSLESS = (".png", ".tif", ".tiff")
_FORMATS = {
    np.dtype(np.uint16): _LOSSLESS,
    np.dtype(np.uint8): (*_LOSSLESS, ".bmp", ".jpg", ".jpeg", ".webp"),
}


# ----------------------------------------------------------------------------------------------------------- writing
def _target(path: str | os.PathLike[str]) -> Path:
    """The file to replace: symlinks followed; refused when it exists and is not a regular file."""
    p = Path(path)
    if p.is_symlink():
        p = Path(os.path.realpath(p))
    if p.is_dir():
        raise DataError(f"{p} is a directory, not an output file")
    if p.exists() and not p.is_file():
        raise DataError(f"{p} exists and is not a regular file (device, pipe or socket); choose a file path")
    if not p.name or p.name in (".", ".."):
        raise DataError(f"{path!s}: not a file name")
    _check_parent(p)
    return p


def _check_parent(p: Path) -> None:
    """DataError when something on the way to `p`'s folder exists and is not a folder."""
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"{parent} is a file, not a folder: cannot write {p}")
            return


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same folder and suffix); on success it replaces `path` atomically.

    Write the whole output to the yielded path.  When the block raises, the temporary file is removed and `path`
    keeps its previous content.  The parent folder is created.  Raises DataError when `path` is a folder or a
    device, OSError when the disk is full or the folder is not writable.
    """
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as a plain open() would create it, not mkstemp's 0600
        os.close(fd)
        fd = -1
        yield tmp
        with open(tmp, "rb+") as f:  # the bytes are on disk before the name points at them
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself is durable (best effort: not every file system allows it)
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_output`); returns the path written."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically (see `atomic_output`); returns the path written."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a path to create as a new folder (it does not exist yet); on success it is renamed to `path`.

    The yielded path has the same name as `path`, inside a hidden temporary folder beside it, so tools that name
    files after their folder (rosbag2) write the final names.  When the block raises, everything is removed: a
    failed run leaves nothing that blocks a rerun.  Raises DataError when `path` exists.
    """
    target = Path(path)
    if target.exists() or target.is_symlink():
        raise DataError(f"{target} exists; choose a new folder")
    if not target.name or target.name in (".", ".."):
        raise DataError(f"{path!s}: not a folder name")
    _check_parent(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield holder / target.name
        if target.exists():
            raise DataError(f"{target} appeared while it was being written; the new output is discarded")
        os.rename(holder / target.name, target)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def check_image_output(path: str | os.PathLike[str], dtype: np.dtype | type, *, lossless: bool = True) -> Path:
    """Check that `path` names an image format that holds `dtype` exactly (lossless unless asked otherwise).

    uint16 (depth): .png, .tif, .tiff.  uint8: also .bmp, and .jpg/.jpeg/.webp when `lossless` is False.
    Raises DataError naming the path and the formats that fit; the check runs before any work is done.
    """
    p = _target(path)
    dt = np.dtype(dtype)
    allowed = _FORMATS.get(dt)
    if allowed is None:
        raise DataError(f"{p}: no image format is used for {dt} here (uint8 or uint16)")
    if lossless:
        allowed = tuple(a for a in allowed if a not in (".jpg", ".jpeg", ".webp"))
    ext = p.suffix.lower()
    if not ext:
        raise DataError(f"{p} has no file extension; name the format, e.g. {p.name}.png")
    if ext not in allowed:
        kind = "16-bit depth" if dt == np.uint16 else "8-bit"
        raise DataError(f"{p}: {ext} cannot hold {kind} values exactly; use {', '.join(allowed)}")
    return p


def write_image(path: str | os.PathLike[str], image: np.ndarray, *, lossless: bool = True) -> Path:
    """Encode `image` (uint8 or uint16; (H, W) or (H, W, 3) BGR) by the extension of `path` and write it atomically.

    Raises DataError for a format that cannot hold the values (see `check_image_output`), OSError when writing
    fails (disk full, no permission); the previous file at `path` is then left as it was.
    """
    p = check_image_output(path, image.dtype, lossless=lossless)
    ok, buf = cv2.imencode(p.suffix.lower(), image)
    if not ok:
        raise DataError(f"cannot encode a {image.shape} {image.dtype} image as {p.suffix}")
    return atomic_write_bytes(p, buf.tobytes())


# ----------------------------------------------------------------------------------------------------------- reading
def image_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None for other formats.

    Raises DataError for a PNG/JPEG whose header is truncated or corrupt, OSError when the file is unreadable.
    """
    with open(path, "rb") as f:
        head = f.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            if len(head) < 24 or head[12:16] != b"IHDR":
                raise DataError(f"{path}: corrupt PNG header")
            w, h = struct.unpack(">II", head[16:24])
            return int(w), int(h)
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(f, path)
    return None


def _jpeg_size(f, path: str | os.PathLike[str]) -> tuple[int, int]:
    """Width and height from the first start-of-frame marker of a JPEG stream (f positioned anywhere)."""
    f.seek(2)
    while True:
        b = f.read(1)
        while b and b != b"\xff":  # skip to the next marker
            b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            raise DataError(f"{path}: corrupt JPEG (no frame header)")
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        seg = f.read(2)
        if len(seg) < 2:
            raise DataError(f"{path}: corrupt JPEG (truncated segment)")
        length = struct.unpack(">H", seg)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sof = f.read(5)
            if len(sof) < 5:
                raise DataError(f"{path}: corrupt JPEG (truncated frame header)")
            h, w = struct.unpack(">HH", sof[1:5])
            return int(w), int(h)
        if length < 2:
            raise DataError(f"{path}: corrupt JPEG (bad segment length)")
        f.seek(length - 2, os.SEEK_CUR)


def check_image_pixels(width: int, height: int, what: str, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Raise ShapeError when a width x height image (to read or to generate) exceeds `max_pixels` or is empty."""
    if width < 1 or height < 1:
        raise ShapeError(f"{what}: empty image size {width}x{height}")
    if width * height > max_pixels:
        raise ShapeError(
            f"{what}: {width}x{height} = {width * height / 1e6:.0f} MP exceeds the limit of {max_pixels / 1e6:.0f} MP "
            "(core.files.MAX_IMAGE_PIXELS)"
        )


def read_image(
    path: str | os.PathLike[str],
    flags: int = cv2.IMREAD_UNCHANGED,
    *,
    what: str = "image",
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """`cv2.imread(path, flags)` after checking the decoded size from the header against `max_pixels`.

    `what` names the file in messages ("depth PNG", "rgb image", ...).

    Raises:
        DataError: file missing, not a regular file, unreadable or corrupt.
        ShapeError: the image would exceed `max_pixels` (nothing is decoded).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} not found (or not a file): {p}")
    try:
        size = image_size(p)
    except OSError as exc:
        raise DataError(f"cannot read {what} {p}: {exc.strerror or exc}") from exc
    except DataError as exc:
        raise DataError(f"corrupt or unreadable {what}: {exc}") from exc
    if size is not None:
        check_image_pixels(*size, what=f"{what} {p}", max_pixels=max_pixels)
    try:
        img = cv2.imread(str(p), flags)
    except cv2.error as exc:
        raise DataError(f"cannot decode {what} {p}: {str(exc).strip().splitlines()[-1]}") from exc
    if img is None:
        raise DataError(f"corrupt or unreadable {what}: {p}")
    if size is None:
        check_image_pixels(img.shape[1], img.shape[0], what=f"{what} {p}", max_pixels=max_pixels)
    return img


MAX_SCAN_POINTS = 16_000_000
"""Largest LiDAR scan read from a file (points); a Velodyne HDL-64 scan has about 120 000."""


def read_kitti_scan(path: str | os.PathLike[str], *, max_points: int = MAX_SCAN_POINTS) -> np.ndarray:
    """KITTI velodyne .bin (float32 x, y, z, reflectance per point) -> (N, 4) float32, velodyne frame, metres.

    Raises:
        DataError: missing, unreadable, a size that is not a whole number of points, or more than `max_points`.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"LiDAR scan not found (or not a file): {p}")
    size = p.stat().st_size
    if size % 16:
        raise DataError(f"{p}: {size} bytes is not a whole number of points (16 bytes: float32 x, y, z, reflectance)")
    if size // 16 > max_points:
        raise DataError(f"{p}: {size // 16} points exceeds the limit of {max_points} (core.files.MAX_SCAN_POINTS)")
    try:
        return np.fromfile(p, dtype=np.float32).reshape(-1, 4)
    except OSError as exc:
        raise DataError(f"cannot read LiDAR scan {p}: {exc}") from exc
