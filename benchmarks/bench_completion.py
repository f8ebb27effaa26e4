"""Benchmark of the weight-free default completer against IP-Basic (fill_in_fast) and nearest fill.

Prints per-stage timings at KITTI size (1242×375), then RMSE / MAE (mm), iRMSE / iMAE (1/km), time (median
ms) and confidence AUSE / top-50 % RMSE ratio on: both shared KITTI frames, KITTI with 32 and 16 of
the 64 beams (real velodyne_raw pixels, beams from raw/lidar_data.bin), the KITTI object frame's projected scan with
each fifth held out in turn as ground truth, and the TUM frame subsampled (spot grid, 1 % / 5 % random, structured-light
holes).  Learned model (random weights) timings when core/model.py is present.  Then how well `network_confidence`
(the confidence published for nets without a confidence head) ranks the errors of stand-in completions of the KITTI
frames at 64 / 32 / 16 beams: the default's depth, IP-Basic, nearest fill and, with `--learned-checkpoint`, a trained
`cspn` model (the released weights are not available here).

    .venv/bin/python benchmarks/bench_completion.py [--json out.json] [--repeats 5]
    .venv/bin/python benchmarks/bench_completion.py --confidence-only [--learned-checkpoint CKPT]   # ~20 s

The checkpoint measured (README) came from 5 CPU-minutes of synthetic training, one torch thread:
    depth-completion train --config config/train_synthetic.yaml --set train.out_dir=OUT --set train.max_minutes=5 \
      --set train.num_threads=1 --set train.device=cpu --set optim.steps=1000 --set optim.batch_size=2 \
      --set data.synthetic.length=48 --set 'model={base_width: 16, max_width: 128}'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from common import machine_line

from depth_completion_ros.core.affinity import anchored_pair_affinity
from depth_completion_ros.core.allocator import configure_allocator
from depth_completion_ros.core.calibration import read_kitti_object_calibration
from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
from depth_completion_ros.core.confidence import (
    default_confidence,
    distance_confidence,
    edge_confidence,
    edge_window,
    network_confidence,
)
from depth_completion_ros.core.fill import classical_fill_detailed, ip_basic_fill, nearest_fill, sparse_stats
from depth_completion_ros.core.metrics import compute_metrics, sparsification
from depth_completion_ros.core.projection import filter_occluded, project_points
from depth_completion_ros.core.propagation import cspn_propagate_pairs
from depth_completion_ros.core.units import KITTI_PNG_SCALE, TUM_PNG_SCALE

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _rgb(p):
    return cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _png(p, scale):
    return cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.float32) / np.float32(scale)


def kitti(cam):
    dc = DATA / "kitti_dc_frame" / "depth_completion"
    rgb = _rgb(dc / "test_image.png") if cam == 2 else _rgb(DATA / "kitti_dc_frame/raw/sync_rect/cam_03.png")
    return (
        rgb,
        _png(dc / f"velodyne_raw_image_0{cam}.png", KITTI_PNG_SCALE),
        _png(dc / f"groundtruth_image_0{cam}.png", KITTI_PNG_SCALE),
    )


def _calib(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, val = line.partition(":")
        with contextlib.suppress(ValueError):
            out[key.strip()] = np.array([float(x) for x in val.split()])
    return out


def kitti_beams(cam, keep):
    """velodyne_raw_image_0{cam} keeping every `keep`-th of the 64 beams (a real sparser-LiDAR input).

    Each pixel of the real sparse map gets the beam (ring, ranked by elevation) of the nearest raw point of
    raw/lidar_data.bin projected with the full-size calibration; rings are split at azimuth wraps and
    segments of one laser (same elevation) merged.
    """
    raw = DATA / "kitti_dc_frame" / "raw"
    p = np.fromfile(raw / "lidar_data.bin", np.float32).reshape(-1, 4)[:, :3].astype(np.float64)
    az = np.arctan2(p[:, 1], p[:, 0])
    seg = np.concatenate([[0], np.cumsum(np.abs(np.diff(az)) > 1.0)])  # a new segment at each azimuth wrap
    el = np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1]))
    med = np.array([np.median(el[seg == r]) for r in range(seg.max() + 1)])
    ring_of_seg = np.empty(len(med), int)
    ring, last = -1, None
    for sidx in np.argsort(-med):
        if last is None or abs(med[sidx] - last) > np.radians(0.05):
            ring += 1
        ring_of_seg[sidx], last = ring, med[sidx]
    rings = ring_of_seg[seg]
    c2c, v2c = _calib(raw / "calib_cam_to_cam.txt"), _calib(raw / "calib_velo_to_cam.txt")
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = v2c["R"].reshape(3, 3), v2c["T"]
    R0 = np.eye(4)
    R0[:3, :3] = c2c["R_rect_00"].reshape(3, 3)
    X = (c2c[f"P_rect_0{cam}"].reshape(3, 4) @ R0 @ T @ np.c_[p, np.ones(len(p))].T).T
    rgb, sp, gt = kitti(cam)
    h, w = gt.shape
    z = X[:, 2]
    m = z > 0.1
    u, v, rg = np.round(X[m, 0] / z[m]).astype(int), np.round(X[m, 1] / z[m]).astype(int), rings[m]
    ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    lab = np.full((h, w), -1, int)
    lab[v[ok], u[ok]] = rg[ok]
    has = lab >= 0
    _, nearest = cv2.distanceTransformWithLabels(
        (~has).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    ring_img = np.concatenate([[-1], lab[has]])[nearest]
    keep_px = (sp > 0) & (ring_img >= 0) & (ring_img % keep == 0)
    return rgb, np.where(keep_px, sp, 0).astype(np.float32), gt


def tum_cases():
    d = DATA / "tum_rgbd_frame"
    rgb, gt = _rgb(d / "TUM_color.png"), _png(d / "TUM_depth.png", TUM_PNG_SCALE)
    r = np.random.default_rng(0)
    out = {}
    g = np.zeros_like(gt)
    g[4::12, 4::12] = gt[4::12, 4::12]
    out["tum_spotgrid12"] = (rgb, g, gt)
    for frac in (0.01, 0.05):
        out[f"tum_random{int(frac * 100)}pct"] = (
            rgb,
            np.where(r.random(gt.shape) < frac, gt, 0).astype(np.float32),
            gt,
        )
    blobs = cv2.GaussianBlur(r.random(gt.shape).astype(np.float32), (0, 0), 6)
    out["tum_holes30pct"] = (rgb, np.where(blobs < np.percentile(blobs, 70), gt, 0).astype(np.float32), gt)
    return out


def kitti_object_folds(folds=5):
    """The KITTI object frame (no ground truth) by cross-validation: its scan projected into image_2 and split at
    random into `folds` parts; each fold is completed from the others and scored on its own points (less those
    `filter_occluded` flags as seen through foreground objects).  The folds' scores pool every point once."""
    d = DATA / "kitti_object_frame" / "data"
    cal = read_kitti_object_calibration(d / "calib" / "000001.txt", 2)
    rgb = _rgb(d / "image_2" / "0000000001.png")
    scan = np.fromfile(next((d / "velodyne").glob("*.bin")), np.float32).reshape(-1, 4)[:, :3]
    sparse = project_points(scan, cal.T_camera_from_velo, cal.camera, min_depth=0.5, max_depth=120.0)
    clean = filter_occluded(sparse)
    fold = np.random.default_rng(0).integers(0, folds, sparse.shape)
    return [
        (rgb, np.where(fold != f, sparse, 0).astype(np.float32), np.where(fold == f, clean, 0).astype(np.float32))
        for f in range(folds)
    ]


def median_ms(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        res = fn()
        ts.append((time.perf_counter() - t) * 1000)
    return res, float(np.median(ts)), float(np.percentile(ts, 75) - np.percentile(ts, 25))


def cpu_ms(fn, repeats):
    """(result, min ms, median ms) of the calling thread's CPU time (`time.thread_time`) over `repeats` calls after
    one warm-up: one-thread work, less sensitive than the wall clock to other processes on a shared machine."""
    res = fn()
    ts = []
    for _ in range(repeats):
        t = time.thread_time()
        res = fn()
        ts.append((time.thread_time() - t) * 1000)
    return res, float(np.min(ts)), float(np.median(ts))


def stage_times(rgb, sp, repeats):
    """One-thread CPU time (min, median ms) of each stage of the default method as a one-band `complete()` runs it
    (the rows the sensor covers for the affinity and propagation, when the completer restricts them), and of the
    whole one-band call and IP-Basic on the same thread.

    `complete()` with bands > 1 runs the stages in row bands on parallel threads, so its time is not their sum;
    see `paired_ratios` for the whole call against IP-Basic on the wall clock.
    """
    from depth_completion_ros.core import completer as completer_module

    cfg = CompleterConfig()
    h = sp.shape[0]
    fill_args = {"outlier_tolerance": cfg.outlier_tolerance, "blur": cfg.fill_blur}
    cov0, cov1 = 0, h
    if hasattr(completer_module, "_covered_rows"):  # (this version: affinity and propagation on the covered rows)
        from depth_completion_ros.core.confidence import edge_window
        from depth_completion_ros.core.fill import sparse_stats

        st = sparse_stats(sp)
        halo = cfg.iterations + edge_window(st.spacing) // 2 + 1
        per_row = (sp > 0).sum(axis=1)
        margin = halo + int(np.ceil(completer_module._COVER_SPACINGS * st.spacing))
        cov0, cov1 = completer_module._covered_rows(per_row, margin)
        fill_args["extend_above"] = cov0
    out = {}
    fr, *out["fill (stats+outliers+nearest+blur)"] = cpu_ms(lambda: classical_fill_detailed(sp, **fill_args), repeats)
    rows = f"rows {cov0}-{cov1}"
    aff, *out[f"affinity (colour scale+pairs+normalization), {rows}"] = cpu_ms(
        lambda: anchored_pair_affinity(rgb[cov0:cov1], anchor=cfg.anchor, sigma_scale=cfg.colour_sigma_scale),
        repeats,
    )
    d, *out[f"propagation ({cfg.iterations} iterations), {rows}"] = cpu_ms(
        lambda: cspn_propagate_pairs(
            np.ascontiguousarray(fr.depth[cov0:cov1]),
            aff.pairs,
            aff.inv_norm,
            anchor=aff.anchor,
            iterations=cfg.iterations,
            sparse=np.ascontiguousarray(fr.anchors[cov0:cov1]),
        ),
        repeats,
    )
    full = fr.depth.copy()
    full[cov0:cov1] = d
    _, *out["confidence"] = cpu_ms(
        lambda: default_confidence(full, fr.depth, fr.anchors > 0, fr.stats.spacing, distance=fr.distance), repeats
    )
    one = DepthCompleter(CompleterConfig(bands=1))
    _, *out["whole complete() (1 band)"] = cpu_ms(lambda: one.complete(rgb, sp), repeats)
    _, *out["IP-Basic fill_in_fast (baseline)"] = cpu_ms(lambda: ip_basic_fill(sp), repeats)
    return out


def paired_ratios(frames, runs, pairs_per_run):
    """Whole `complete()` against IP-Basic, paired and interleaved on every frame: one thread (bands=1) and the default
    bands, each call followed by an IP-Basic call on the same frame; `runs` rounds of `pairs_per_run` pairs a frame.

    Returns {"1 thread" / "N bands": {"ms", "ip_ms", "ratio_q" (p25, p50, p75 of all pair ratios), "run_medians"}}.
    """
    cfg = CompleterConfig()
    setups = {"1 thread": DepthCompleter(CompleterConfig(bands=1)), f"{cfg.bands} bands": DepthCompleter(cfg)}
    samples = {k: [] for k in setups}  # (run, ours ms, ip ms)
    for run in range(runs):
        for rgb, sp in frames:
            for comp in setups.values():  # warm-up (first call of a run after the other frame)
                comp.complete(rgb, sp)
            for _ in range(pairs_per_run):
                for name, comp in setups.items():
                    t0 = time.perf_counter()
                    comp.complete(rgb, sp)
                    t1 = time.perf_counter()
                    ip_basic_fill(sp)
                    t2 = time.perf_counter()
                    samples[name].append((run, (t1 - t0) * 1e3, (t2 - t1) * 1e3))
    out = {}
    for name, rows in samples.items():
        a = np.array(rows)
        ratios = a[:, 1] / a[:, 2]
        out[name] = {
            "ms": float(np.median(a[:, 1])),
            "ip_ms": float(np.median(a[:, 2])),
            "ratio_q": [float(q) for q in np.percentile(ratios, [25, 50, 75])],
            "run_medians": [float(np.median(ratios[a[:, 0] == r])) for r in range(runs)],
            "pairs": len(rows),
        }
    return out


def learned_times(rgb, sp, repeats):
    """Learned model (random weights) per device, median ms (or why it is unavailable)."""
    out = {}
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        try:
            learned = DepthCompleter(CompleterConfig(method="cspn", allow_random_weights=True, device=dev))
        except ImportError as exc:
            out[f"learned_random_{dev}"] = f"unavailable: {exc}"
            continue

        def run(learned=learned, dev=dev):
            r = learned.complete(rgb, sp)
            if dev == "cuda":
                torch.cuda.synchronize()
            return r

        _, out[f"learned_random_{dev}"], _ = median_ms(run, max(1, repeats // 2))
    return out


def _ranking(pred, gt, conf, sp, seed=0):
    """AUSE (mm) and top-50 % RMSE ratio of `conf` over all ground-truth pixels and over those without an input
    measurement, with the same figures for a seeded random ranking and the oracle's top-50 % ratio."""
    out = {}
    rand = np.random.default_rng(seed).random(gt.shape)
    for part, g in (("all", gt), ("unmeasured", np.where(sp > 0, 0, gt))):
        s = sparsification(pred, g, conf)
        r = sparsification(pred, g, rand)
        half = int(np.argmin(np.abs(np.asarray(s["fractions"]) - 0.5)))  # the oracle curve at f = 0.5 over f = 0
        out[part] = {
            "ause_mm": s["ause_mm"],
            "rmse_ratio_top50": s["rmse_ratio_top50"],
            "random_ause_mm": r["ause_mm"],
            "oracle_ratio_top50": s["oracle_rmse_mm"][half] / s["oracle_rmse_mm"][0],
        }
    return out


def network_confidence_ranking(cases, learned_checkpoint=None):
    """How well `network_confidence` ranks the errors of several dense completions of the same real frames.

    The released PENet / ENet / CSPN weights are not available here, so their output is stood in for by: the
    weight-free default's depth, IP-Basic, nearest fill and (given `learned_checkpoint`) the project's learned CSPN.
    Each completion is scored with `network_confidence(depth, sparse, spacing)` as the node computes it for a net
    without a confidence head, next to its factors without the disagreement term (distance only, distance x edge)
    and the completion's own confidence where it has one.

    Returns rows {"case", "completion", "rmse_mm", "confidence", "all": {...}, "unmeasured": {...}} (`_ranking`).
    """
    comps = {"default": DepthCompleter(), "ip_basic": ip_basic_fill, "nearest": nearest_fill}
    if learned_checkpoint is not None:
        comps["learned_cspn"] = DepthCompleter(
            CompleterConfig(method="cspn", checkpoint=learned_checkpoint, device="cpu")
        )
    rows = []
    for name, (rgb, sp, gt) in cases.items():
        spacing = sparse_stats(sp).spacing
        for cname, comp in comps.items():
            own = None
            if isinstance(comp, DepthCompleter):
                pred, own = comp.complete(rgb, sp)
            else:
                pred = comp(sp)
            confs = {
                "network_confidence": network_confidence(pred, sp, spacing),
                "distance only": distance_confidence(sp > 0, spacing),
                "distance x edge": distance_confidence(sp > 0, spacing)
                * edge_confidence(pred, window=edge_window(spacing)),
            }
            if own is not None:
                confs["its own"] = own
            rmse = compute_metrics(pred, gt).rmse_mm
            for kind, conf in confs.items():
                rows.append(
                    {
                        "case": name,
                        "completion": cname,
                        "rmse_mm": rmse,
                        "confidence": kind,
                        **_ranking(pred, gt, conf, sp),
                    }
                )
    return rows


def print_network_confidence(rows):
    print(
        "\nnetwork_confidence on stand-in completions (released weights not available): AUSE mm / RMSE top-50 % over"
        " all, vs a random ranking and the oracle; 'unmeasured': GT pixels without an input measurement"
    )
    print(
        f"  {'case':13s} {'completion':12s} {'RMSE mm':>8s} {'confidence':18s} {'AUSE':>7s} {'rand':>7s} "
        f"{'top50':>6s} {'oracle':>6s} | {'AUSE':>7s} {'rand':>7s} {'top50':>6s} {'oracle':>6s}"
    )
    for r in rows:
        parts = [
            f"{p['ause_mm']:7.1f} {p['random_ause_mm']:7.1f} {p['rmse_ratio_top50']:6.3f} "
            f"{p['oracle_ratio_top50']:6.3f}"
            for p in (r["all"], r["unmeasured"])
        ]
        print(f"  {r['case']:13s} {r['completion']:12s} {r['rmse_mm']:8.1f} {r['confidence']:18s} {' | '.join(parts)}")
    print(machine_line())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5, help="rounds of paired complete() / IP-Basic calls")
    ap.add_argument("--pairs", type=int, default=4, help="pairs a frame and setup in each round")
    ap.add_argument("--stage-repeats", type=int, default=20, help="calls per stage (CPU time: min and median)")
    ap.add_argument("--stages-only", action="store_true", help="timings only, no accuracy table")
    ap.add_argument("--no-learned", action="store_true", help="skip the learned model's (slow) CPU timing")
    ap.add_argument(
        "--cv-threads", type=int, default=None, help="cv2.setNumThreads for the run (1: IP-Basic on one thread too)"
    )
    ap.add_argument(
        "--confidence-only",
        action="store_true",
        help="only the network_confidence ranking on the KITTI frames at 64 / 32 / 16 beams (no timings)",
    )
    ap.add_argument(
        "--learned-checkpoint",
        type=Path,
        default=None,
        help="a trained `cspn` checkpoint whose output is one more stand-in for network_confidence",
    )
    args = ap.parse_args()
    configure_allocator()  # as the node and CLI do (see benchmarks/README.md)
    if args.cv_threads is not None:
        cv2.setNumThreads(args.cv_threads)
    torch.manual_seed(0)
    cases = {
        "kitti_02": kitti(2),
        "kitti_03": kitti(3),
        "kitti_32beam": kitti_beams(2, 2),
        "kitti_16beam": kitti_beams(2, 4),
        "kitti_object_5fold": kitti_object_folds(),
        **tum_cases(),
    }
    kitti_cases = ("kitti_02", "kitti_03", "kitti_32beam", "kitti_16beam")
    if args.confidence_only:
        print(f"{platform.processor() or platform.machine()}, OpenCV threads {cv2.getNumThreads()}")
        netconf = network_confidence_ranking({k: cases[k] for k in kitti_cases}, args.learned_checkpoint)
        print_network_confidence(netconf)
        if args.json:
            args.json.write_text(json.dumps({"machine_load": machine_line(), "network_confidence": netconf}, indent=1))
            print(f"\nwrote {args.json}")
        return
    rgb, sp, _ = cases["kitti_02"]
    stages = stage_times(rgb, sp, args.stage_repeats)
    print(f"{platform.processor() or platform.machine()}, OpenCV threads {cv2.getNumThreads()}")
    print("\nstage timings at 1242x375, kitti_02, one thread's CPU time (ms)")
    print(f"  {'stage':58s} {'min':>6s} {'median':>7s}")
    for k, (lo, med) in stages.items():
        print(f"  {k:58s} {lo:6.2f} {med:7.2f}")
    print(machine_line())
    paired = paired_ratios([cases[k][:2] for k in ("kitti_02", "kitti_03")], args.runs, args.pairs)
    print(
        f"\nwhole complete() vs IP-Basic fill_in_fast, paired and interleaved, both KITTI frames, "
        f"{args.runs} runs x {args.pairs} pairs a frame (wall clock)"
    )
    print(f"  {'setup':10s} {'ours ms':>8s} {'IP ms':>7s} {'ratio p25':>9s} {'p50':>6s} {'p75':>6s}   per-run medians")
    for name, r in paired.items():
        q = r["ratio_q"]
        runs = " ".join(f"{m:.2f}" for m in r["run_medians"])
        print(f"  {name:10s} {r['ms']:8.2f} {r['ip_ms']:7.2f} {q[0]:9.2f} {q[1]:6.2f} {q[2]:6.2f}   {runs}")
    print(machine_line())
    learned = {} if args.no_learned else learned_times(rgb, sp, args.repeats)
    for k, v in learned.items():
        print(f"  {k:52s} {v:.2f}" if isinstance(v, float) else f"  {k:52s} {v}")
    if args.stages_only:
        return
    comp = DepthCompleter()
    methods = {"ip_basic": ip_basic_fill, "nearest": nearest_fill}
    rows = []
    print(
        f"\n{'case':18s} {'method':9s} {'RMSE mm':>9s} {'MAE mm':>8s} {'iRMSE':>7s} {'iMAE':>6s} {'ms':>7s} "
        f"{'AUSE mm':>8s} {'top50':>6s}"
    )
    for name, case in cases.items():
        folds = case if isinstance(case, list) else [case]  # folds: scored pooled (stacked), timed on the first
        rgb, sp, _ = folds[0]
        gt = np.concatenate([g for _, _, g in folds])
        res = {}
        for mname, fn in methods.items():
            first, ms, _ = median_ms(lambda fn=fn, sp=sp: fn(sp), args.repeats)
            pred = np.concatenate([first] + [fn(s) for _, s, _ in folds[1:]])
            res[mname] = (compute_metrics(pred, gt), ms, None)
        first, ms, _ = median_ms(lambda rgb=rgb, sp=sp: comp.complete(rgb, sp), args.repeats)
        outs = [first] + [comp.complete(r, s) for r, s, _ in folds[1:]]
        pred, conf = np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
        res["default"] = (compute_metrics(pred, gt), ms, sparsification(pred, gt, conf))
        for mname, (m, ms, spars) in res.items():
            ause = f"{spars['ause_mm']:8.1f} {spars['rmse_ratio_top50']:6.3f}" if spars else f"{'':8s} {'':6s}"
            print(
                f"{name:18s} {mname:9s} {m.rmse_mm:9.1f} {m.mae_mm:8.1f} {m.irmse_per_km:7.2f} "
                f"{m.imae_per_km:6.2f} {ms:7.1f} {ause}"
            )
            rows.append(
                {
                    "case": name,
                    "method": mname,
                    **m.as_dict(),
                    "median_ms": ms,
                    **(
                        {
                            "ause_mm": spars["ause_mm"],
                            "rmse_ratio_top50": spars["rmse_ratio_top50"],
                            "sparsification_rmse_mm": spars["rmse_mm"],
                        }
                        if spars
                        else {}
                    ),
                }
            )
        best = min(res["ip_basic"][0].rmse_mm, res["nearest"][0].rmse_mm)
        best_mae = min(res["ip_basic"][0].mae_mm, res["nearest"][0].mae_mm)
        d = res["default"][0]
        print(f"{'':18s} default beats both: RMSE {d.rmse_mm < best}, MAE {d.mae_mm < best_mae}")
    print(machine_line())
    netconf = network_confidence_ranking({k: cases[k] for k in kitti_cases}, args.learned_checkpoint)
    print_network_confidence(netconf)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "stages_ms": stages,
                    "paired_vs_ip_basic": paired,
                    "learned_ms": learned,
                    "machine_load": machine_line(),
                    "results": rows,
                    "network_confidence": netconf,
                    "torch_threads": torch.get_num_threads(),
                    "repeats": args.repeats,
                },
                indent=1,
            )
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
