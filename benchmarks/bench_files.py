"""Cost of the hardened file I/O (core/files.py) against plain OpenCV, at KITTI size (1242x375).

write: `cv2.imwrite` (baseline: writes in place, a failed write loses the previous file) vs `files.write_image`
(encode, temporary file beside the target, fsync, rename).  read: `cv2.imread` (baseline) vs `files.read_image`
(header size check first).  Files go to a temporary folder on the same disk as the repository's `out/`.

    .venv/bin/python benchmarks/bench_files.py [--repeats 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
from common import print_table, time_call, write_json

from depth_completion_ros.core import files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    depth = np.zeros((375, 1242), np.uint16)
    depth[::4, ::3] = rng.integers(500, 20000, depth[::4, ::3].shape, dtype=np.uint16)  # a sparse KITTI-like PNG
    dense = rng.integers(500, 20000, (375, 1242), dtype=np.uint16)
    out_root = Path(__file__).resolve().parents[1] / "out"
    out_root.mkdir(exist_ok=True)
    rows, results = [], {}
    with tempfile.TemporaryDirectory(dir=out_root) as tmp:
        for name, img in (("sparse", depth), ("dense", dense)):
            path = Path(tmp) / f"{name}.png"
            base_w = time_call(lambda p=path, i=img: cv2.imwrite(str(p), i), args.repeats)
            new_w = time_call(lambda p=path, i=img: files.write_image(p, i), args.repeats)
            base_r = time_call(lambda p=path: cv2.imread(str(p), cv2.IMREAD_UNCHANGED), args.repeats)
            new_r = time_call(lambda p=path: files.read_image(p, cv2.IMREAD_UNCHANGED), args.repeats)
            results[name] = {"imwrite": base_w, "write_image": new_w, "imread": base_r, "read_image": new_r}
            for op, b, n in (("write", base_w, new_w), ("read", base_r, new_r)):
                rows.append([f"{name} {op}", b["median_ms"], n["median_ms"], n["median_ms"] - b["median_ms"]])
    load = os.getloadavg()
    print_table(
        f"KITTI-size uint16 PNG, median of {args.repeats} (load average {load[0]:.2f}, {os.cpu_count()} CPUs)",
        ["case", "OpenCV ms", "core.files ms", "added ms"],
        rows,
    )
    if args.json:
        write_json(args.json, {"files": results, "load_average": load})


if __name__ == "__main__":
    main()
