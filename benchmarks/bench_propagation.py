"""CSPN propagation speed: `core.propagation.cspn_propagate` vs a straightforward unfold-based version.

Both compute the same update on the same (normalized, border-zeroed) affinities with sparse replacement;
the outputs are checked with allclose before timing.  Default size 1242×375 (KITTI), 5 % sparse points.

    .venv/bin/python benchmarks/bench_propagation.py [--iterations 12 24] [--threads 1 2] [--json out.json]

Prints a table: median and IQR in ms over `--repeats` runs after warm-up, the unfold baseline measured in the
same run, the ratio, and ms per iteration.  CUDA rows are added when a GPU is present (synchronized timing).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line

from depth_completion_ros.core.allocator import configure_allocator
from depth_completion_ros.core.propagation import (
    NEIGHBOUR_OFFSETS,
    PAIR_OFFSETS,
    cspn_propagate,
    cspn_propagate_pairs,
    normalize_affinity,
)


def unfold_propagate(h0: torch.Tensor, aff: torch.Tensor, n: int, sparse: torch.Tensor | None) -> torch.Tensor:
    """Reference: F.unfold materializes the 3×3 neighbourhoods (B, 9, H·W) every step."""
    B, _, H, W = h0.shape
    center = (1 - aff.sum(1, keepdim=True)) * h0
    valid = sparse > 0 if sparse is not None else None
    h = h0
    for _ in range(n):
        patches = F.unfold(h, 3, padding=1).view(B, 9, H, W)
        nb = torch.cat([patches[:, :4], patches[:, 5:]], dim=1)
        h = (aff * nb).sum(1, keepdim=True) + center
        if valid is not None:
            h = torch.where(valid, sparse, h)
    return h


def _time(fn, repeats: int, warmup: int, device: torch.device) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return statistics.median(ts), q[2] - q[0]


def _pair(mode: str, h0, raw, aff, sparse, n: int):
    """(ours, unfold reference) callables; "raw+norm" includes the affinity normalization in both."""
    if mode == "normalized":
        return (
            lambda: cspn_propagate(h0, aff, iterations=n, sparse=sparse, normalized=True),
            lambda: unfold_propagate(h0, aff, n, sparse),
        )
    return (
        lambda: cspn_propagate(h0, raw, iterations=n, sparse=sparse),
        lambda: unfold_propagate(h0, normalize_affinity(raw), n, sparse),
    )


def _pair_rows(H: int, W: int, args) -> list[dict]:
    """The weight-free default's kernel (`cspn_propagate_pairs`: symmetric weights, anchored normalization, one
    numba pass per step, CPU) against the unfold reference on the same weights expanded to 8 normalized channels."""
    rng = np.random.default_rng(0)
    anchor = 0.5
    pairs = np.zeros((4, H + 2, W + 2), np.float32)
    pairs[:, 1 : H + 1, 1 : W + 1] = rng.random((4, H, W), dtype=np.float32)
    pairs[0, :, W] = 0.0  # (0, 1): no right neighbour in the last column
    pairs[1:, H] = 0.0  # (1, 0), (1, 1), (1, -1): no neighbour below the last row
    pairs[2, :, W] = 0.0  # (1, 1)
    pairs[3, :, 1] = 0.0  # (1, -1): no left neighbour in the first column
    h0 = rng.uniform(1.0, 81.0, (H, W)).astype(np.float32)
    sparse = np.where(rng.random((H, W)) < args.density, rng.uniform(1.0, 81.0, (H, W)), 0.0).astype(np.float32)
    raw = np.empty((8, H, W), np.float32)
    for i, (dy, dx) in enumerate(PAIR_OFFSETS):
        raw[NEIGHBOUR_OFFSETS.index((dy, dx))] = pairs[i, 1 : H + 1, 1 : W + 1]
        raw[NEIGHBOUR_OFFSETS.index((-dy, -dx))] = pairs[i, 1 - dy : 1 - dy + H, 1 - dx : 1 - dx + W]
    inv_norm = (1.0 / (raw.sum(axis=0) + anchor)).astype(np.float32)
    aff = torch.from_numpy(raw * inv_norm)[None]
    h0_t, sparse_t = torch.from_numpy(h0)[None, None], torch.from_numpy(sparse)[None, None]
    torch.set_num_threads(1)
    out = []
    for n in args.iterations:
        fn = lambda n=n: cspn_propagate_pairs(h0, pairs, inv_norm, anchor=anchor, iterations=n, sparse=sparse)  # noqa: E731
        with torch.inference_mode():
            ref = unfold_propagate(h0_t, aff, n, sparse_t)[0, 0].numpy()
            err = float(np.abs(fn() - ref).max())
            t_ref, _ = _time(
                lambda n=n: unfold_propagate(h0_t, aff, n, sparse_t), max(3, args.repeats // 3), 1, torch.device("cpu")
            )
        if not np.allclose(fn(), ref, rtol=1e-5, atol=1e-4):
            raise SystemExit(f"MISMATCH of the pair kernel vs unfold reference: max |diff| = {err}")
        t_ours, iqr = _time(fn, args.repeats, args.warmup, torch.device("cpu"))
        out.append(_report("cpu", 1, n, "pairs(numba)", t_ours, iqr, t_ref, err))
    return out


def _report(device: str, threads: int, n: int, mode: str, t_ours: float, iqr: float, t_ref: float, err: float) -> dict:
    """Print one table row and return it as a JSON record."""
    row = {
        "device": device,
        "threads": threads,
        "iterations": n,
        "mode": mode,
        "ours_ms": t_ours,
        "ours_iqr_ms": iqr,
        "unfold_ms": t_ref,
        "ratio": t_ref / t_ours,
        "ms_per_iteration": t_ours / n,
        "max_abs_diff": err,
    }
    print(
        f"{device:<6} {threads:>3} {n:>5} {mode:<12} {t_ours:>9.2f} {iqr:>6.2f} {t_ref:>10.2f} "
        f"{row['ratio']:>6.1f}x {row['ms_per_iteration']:>8.3f}   max |diff| {err:.1e} m"
    )
    return row


def main() -> int:
    configure_allocator()  # as the node and CLI do (see benchmarks/README.md)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=1242)
    ap.add_argument("--height", type=int, default=375)
    ap.add_argument("--iterations", type=int, nargs="+", default=[12, 24])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    torch.manual_seed(0)
    H, W = args.height, args.width
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    header = (
        f"{'device':<6} {'thr':>3} {'iters':>5} {'mode':<12} {'ours ms':>9} {'iqr':>6} {'unfold ms':>10} "
        f"{'ratio':>7} {'ms/iter':>8}"
    )
    print(f"CSPN propagation, {W}x{H}, {args.density:.0%} sparse, torch {torch.__version__}, {platform.processor()}")
    print(header)
    print("-" * len(header))
    for dev in devices:
        h0 = (torch.rand(1, 1, H, W) * 80 + 1).to(dev)
        raw = torch.randn(1, 8, H, W).to(dev)
        sparse = torch.where(torch.rand(1, 1, H, W) < args.density, torch.rand(1, 1, H, W) * 80 + 1, 0.0).to(dev)
        threads = args.threads if dev.type == "cpu" else [torch.get_num_threads()]
        for thr in threads:
            torch.set_num_threads(thr)
            with torch.inference_mode():
                aff = normalize_affinity(raw)
                for n in args.iterations:
                    ours = cspn_propagate(h0, aff, iterations=n, sparse=sparse, normalized=True)
                    ref = unfold_propagate(h0, aff, n, sparse)
                    err = float((ours - ref).abs().max())
                    if not torch.allclose(ours, ref, rtol=1e-5, atol=1e-4):
                        print(f"MISMATCH vs unfold reference: max |diff| = {err}", file=sys.stderr)
                        return 1
                    for mode in ("normalized", "raw+norm"):
                        fn, ref_fn = _pair(mode, h0, raw, aff, sparse, n)
                        t_ours, iqr = _time(fn, args.repeats, args.warmup, dev)
                        t_ref, _ = _time(ref_fn, max(3, args.repeats // 3), 1, dev)
                        rows.append(_report(dev.type, thr, n, mode, t_ours, iqr, t_ref, err))
    rows += _pair_rows(H, W, args)
    print(machine_line())
    if args.json:
        meta = {
            "torch": torch.__version__,
            "size": [H, W],
            "density": args.density,
            "repeats": args.repeats,
            "machine_load": machine_line(),
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
