"""Shared benchmark helpers: warm-up, median / IQR timing, a printed table and JSON with machine metadata."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["bench_frame", "import_with_cli", "machine_line", "metadata", "print_table", "time_call", "write_json"]


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median and IQR in milliseconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    samples = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - t0
    q1, med, q3 = np.percentile(samples * 1e3, [25, 50, 75])
    return {"median_ms": float(med), "iqr_ms": float(q3 - q1), "repeats": repeats}


def machine_line() -> str:
    """One line to print beside every table: the load average (1 / 5 / 15 min) and the CPU count, now.

    Figures taken while other processes use the CPU are slower than on an idle machine: a load average near or
    above the CPU count means the table was measured under load."""
    one, five, fifteen = os.getloadavg()
    return f"machine: load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min), {os.cpu_count()} CPUs"


def metadata() -> dict[str, object]:
    """Machine and library facts to store beside the figures."""
    import cv2
    import torch

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": list(os.getloadavg()),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a fixed-width table (floats with 3 significant decimals) and `machine_line()` under it."""

    def fmt(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(machine_line())


def write_json(path: str | Path | None, results: dict[str, object]) -> None:
    """Write `results` plus `metadata()` to `path` (no-op for None)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metadata": metadata(), "results": results}, indent=2))


def import_with_cli(fmt: str, src: Path, config: dict[str, object] | None = None):
    """The authors' checkpoint `src` imported as a user does: `depth-completion import-weights --format FMT SRC
    --out DST.safetensors [--config JSON]` (restricted unpickler, key and shape checks), then `load_published(DST)`.

    Returns our model in eval mode on the CPU.  Raises RuntimeError when the import is refused.
    """
    from depth_completion_ros.cli import main as cli_main
    from depth_completion_ros.core.published.importer import load_published

    out = Path(src).with_suffix(".imported.safetensors")
    argv = ["import-weights", "--format", fmt, str(src), "--out", str(out)]
    if config:
        argv += ["--config", json.dumps(config)]
    rc = cli_main(argv)
    if rc != 0:
        raise RuntimeError(f"depth-completion {' '.join(argv)} exited {rc}")
    model, _, _, _ = load_published(out)
    return model.eval()


def bench_frame():
    """The node benchmarks' input: (KittiCalibration, rgb (H, W, 3) uint8, scan (N, 4) float32, source label) of the
    shared KITTI frame, or of a generated scene when the data folder is absent."""
    from depth_completion_ros.tools.kitti_to_bag import iter_kitti_frames
    from depth_completion_ros.tools.project import default_kitti_dir

    kitti = default_kitti_dir()
    if kitti.is_dir():
        calib, frames, _ = iter_kitti_frames(kitti)
        frame = next(frames)
        return calib, frame.rgb, frame.scan, "KITTI frame"
    from depth_completion_ros.core.calibration import KittiCalibration
    from depth_completion_ros.data.synthetic import generate_scene

    scene = generate_scene(seed=0)
    return KittiCalibration(scene.camera, scene.T_camera_from_lidar), scene.rgb, scene.points_lidar, "synthetic scene"
