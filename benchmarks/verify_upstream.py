"""Equivalence (and CPU speed) of our published-model ports against their authors' code, at equal weights.

    .venv/bin/python benchmarks/verify_upstream.py --penet-src DIR --cspn-src DIR [--repeats N] [--bench]

DIR: the authors' sources, a folder or a bare git directory (JUGGHM/PENet_ICRA2021, XinJCheng/CSPN).  Each part
copies them into a temporary folder and patches them there only, builds the authors' models with seeded random
weights, saves them in the authors' checkpoint format, imports them with `depth-completion import-weights`, runs
both on the shared frames and prints max |Δdepth| (target ≤ 1e-3 m, float32, CPU) and the times.
Runs `verify_upstream_penet.py` (PENet, ENet: the KITTI frame cropped as their loader does) and
`verify_upstream_cspn.py` (the NYU model: the TUM frame prepared as their NYU loader does), each in its own
process (the authors' module names would collide in one); a part whose source is not given is skipped.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run the parts whose sources are given; exit code: the worst part's."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--penet-src", type=Path, help="JUGGHM/PENet_ICRA2021 sources (folder or bare git dir)")
    ap.add_argument("--cspn-src", type=Path, help="XinJCheng/CSPN sources (folder or bare git dir)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per model (0: equivalence only)")
    ap.add_argument("--bench", action="store_true", help="CSPN: also time the propagation and the whole model")
    args = ap.parse_args()
    if args.penet_src is None and args.cspn_src is None:
        ap.error("give --penet-src and/or --cspn-src")
    parts = []
    if args.penet_src is not None:
        parts.append(["verify_upstream_penet.py", "--penet-src", str(args.penet_src), "--repeats", str(args.repeats)])
    if args.cspn_src is not None:
        cspn = ["verify_upstream_cspn.py", "--cspn-src", str(args.cspn_src), "--repeats", str(max(1, args.repeats))]
        parts.append([*cspn, "--bench"] if args.bench else cspn)
    rc = 0
    for script, *rest in parts:
        print(f"== {script} {' '.join(rest)}", flush=True)
        rc = max(rc, subprocess.call([sys.executable, str(HERE / script), *rest]))
    return rc


if __name__ == "__main__":
    sys.exit(main())
