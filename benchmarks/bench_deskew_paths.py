"""The shared KITTI frame through the node three ways, against ground truth: how much live de-skew recovers.

1. `offline`: the bag's scans de-skewed by `kitti-to-bag` (OXTS velocity; the node's own demo input);
2. `live`: raw scans + `/tf` odom -> base_link from OXTS (`kitti-to-bag --odometry`), the node's
   deskew stage compensating them (deskew auto, ego motion from tf);
   `live_twist`: the same bag, ego motion from its `/kitti/oxts/twist` (TwistStamped of base_link) instead;
3. `raw`: raw scans with `deskew:=off` (the baseline: what a bag from another tool gave before).

Each path is one `depth-completion demo` run (bag -> player and node processes over DDS -> metrics), so the
figures are the node's published outputs.  Prints dense RMSE / MAE and the sparse input's own RMSE / MAE (the
projected points where ground truth exists) and the live path's gap to the offline one (target: within 2 %).
Usage: .venv/bin/python benchmarks/bench_deskew_paths.py [--frames 10] [--json out/bench/deskew_paths.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import print_table, write_json

KITTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_dc_frame"
PATHS = {
    "offline": ("de-skewed offline (kitti-to-bag)", "offline", []),
    "live": ("raw + /tf odometry, node deskew auto", "live", []),
    "live_twist": (
        "raw + TwistStamped, node deskew auto",
        "live",
        ["deskew_motion_source:=twist", "deskew_motion_topic:=/kitti/oxts/twist"],
    ),
    "raw": ("raw, node deskew off", "raw", ["deskew:=off"]),
}


def run_path(name: str, frames: int, work: Path) -> dict:
    _, lidar, params = PATHS[name]
    out = work / name
    cmd = [sys.executable, "-m", "depth_completion_ros.cli", "demo", "--kitti-dir", str(KITTI)]
    cmd += ["--frames", str(frames), "--out", str(out), "--lidar", lidar]
    for p in params:
        cmd += ["--param", p]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: demo failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    report = json.loads((out / "metrics.json").read_text())
    log = (out / "node.log").read_text(errors="replace")
    report["deskew_log"] = [line.split("]: ", 1)[-1] for line in log.splitlines() if "deskew" in line][:4]
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (KITTI / "raw" / "lidar_data.bin").is_file():
        print(f"skipped: {KITTI} absent")
        return 0
    work = Path(tempfile.mkdtemp(prefix="dcr_deskew_paths_"))
    reports = {name: run_path(name, args.frames, work) for name in PATHS}
    rows = []
    for name, r in reports.items():
        m, s = r["metrics_node"], r["metrics_sparse_input"]
        rows.append(
            [
                PATHS[name][0],
                m["rmse_mm"],
                m["mae_mm"],
                s["rmse_mm"],
                s["mae_mm"],
                r.get("frames_processed"),
                r.get("frames_failed"),
            ]
        )
    load = os.getloadavg()
    print_table(
        f"Shared KITTI frame through depth_completion_node ({args.frames} frames each; load average "
        f"{load[0]:.2f}, {os.cpu_count()} CPUs); sparse = the projected points where ground truth exists",
        ["path", "dense RMSE mm", "dense MAE mm", "sparse RMSE mm", "sparse MAE mm", "processed", "failed"],
        rows,
    )
    off, live = reports["offline"]["metrics_node"]["rmse_mm"], reports["live"]["metrics_node"]["rmse_mm"]
    gap = (live - off) / off * 100.0
    print(f"live vs offline dense RMSE: {gap:+.2f} % (target within 2 %)")
    for name, r in reports.items():
        for line in r["deskew_log"]:
            print(f"  [{name}] {line}")
    write_json(args.json, {"paths": reports, "live_vs_offline_rmse_percent": gap, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
