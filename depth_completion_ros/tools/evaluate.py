"""`depth-completion evaluate`: KITTI metrics, per-frame panels and the confidence sparsification plot.

Two inputs:
  * a directory of predicted depth PNGs against a directory of ground-truth PNGs (uint16, metres x 256 by
    default), matched by file name (KITTI's `_image_` / `_velodyne_raw_` / `_groundtruth_depth_` tokens are
    ignored when matching), or in sorted order when the names differ but the counts agree;
  * a model (the weight-free default or a cspn checkpoint, via `core.completer.DepthCompleter`) run over a data
    set: KITTI DC (`kitti`: train/val layout; `val_selection_cropped`), the shared KITTI frame (`kitti_frame`:
    ../shared/data/kitti_dc_frame, image_02 and image_03), NYU-style RGB-D (`rgbd`) or `synthetic` scenes.
Metrics as the KITTI devkit: per image over pixels with ground truth, then the mean over images; RMSE/MAE in
mm, iRMSE/iMAE in 1/km; also REL and delta thresholds.  Outputs: summary.json, a printed table, panels/*.png
(RGB | sparse | dense | confidence | error, with colour bars) and sparsification.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from depth_completion_ros.cli import one_line
from depth_completion_ros.core.errors import DataError, DepthCompletionError
from depth_completion_ros.core.files import atomic_output, atomic_write_text, read_image
from depth_completion_ros.core.metrics import DepthMetrics, compute_metrics, mean_metrics, sparsification
from depth_completion_ros.core.units import KITTI_PNG_SCALE, kitti_png_to_metres
from depth_completion_ros.tools.argtypes import nonneg_int, positive_float, positive_int

__all__ = [
    "add_arguments",
    "evaluate_completer",
    "evaluate_predictions",
    "format_table",
    "iter_frames",
    "match_prediction_files",
    "plot_sparsification",
    "run",
    "write_panel",
]

_TOKENS = ("_groundtruth_depth_", "_velodyne_raw_", "_image_", "groundtruth_", "velodyne_raw_")
_COLUMNS = (
    ("rmse_mm", "RMSE mm", "{:10.1f}"),
    ("mae_mm", "MAE mm", "{:9.1f}"),
    ("irmse_per_km", "iRMSE 1/km", "{:10.3f}"),
    ("imae_per_km", "iMAE 1/km", "{:9.3f}"),
    ("rel", "REL", "{:7.4f}"),
    ("delta1", "d<1.25", "{:7.4f}"),
    ("delta2", "d<1.25^2", "{:8.4f}"),
    ("delta3", "d<1.25^3", "{:8.4f}"),
)


# --------------------------------------------------------------------------------------------------------- matching
def _key(name: str) -> str:
    stem = Path(name).stem
    for t in _TOKENS:
        stem = stem.replace(t, "_")
    return stem


def match_prediction_files(pred_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """Pairs (prediction PNG, ground-truth PNG).

    Raises:
        DataError: a ground-truth file without prediction (names differ and counts differ), or no files.
    """
    preds = sorted(pred_dir.glob("*.png"))
    gts = sorted(gt_dir.glob("*.png"))
    if not gts:
        raise DataError(f"no ground-truth PNGs in {gt_dir}")
    by_key = {_key(p.name): p for p in preds}
    pairs = [(by_key[_key(g.name)], g) for g in gts if _key(g.name) in by_key]
    if len(pairs) == len(gts):
        return pairs
    if len(preds) == len(gts):
        return list(zip(preds, gts, strict=True))
    missing = [g.name for g in gts if _key(g.name) not in by_key]
    raise DataError(f"{len(missing)} ground-truth file(s) have no prediction in {pred_dir}, e.g. {missing[0]}")


def _read_depth(path: Path, scale: float) -> np.ndarray:
    png = read_image(path, cv2.IMREAD_UNCHANGED, what="depth PNG")
    if png.ndim != 2 or png.dtype != np.uint16:
        raise DataError(f"depth PNG must be single-channel uint16: {path} is {png.shape} {png.dtype}")
    return kitti_png_to_metres(png, scale)


def evaluate_predictions(pred_dir: Path, gt_dir: Path, *, scale: float = KITTI_PNG_SCALE) -> dict[str, Any]:
    """KITTI metrics of prediction PNGs against ground-truth PNGs (per image, then mean over images).

    Raises:
        DataError: unreadable PNGs, size mismatch, empty ground truth, missing predictions.
    """
    frames = []
    per_image: list[DepthMetrics] = []
    for p, g in match_prediction_files(Path(pred_dir), Path(gt_dir)):
        pred, gt = _read_depth(p, scale), _read_depth(g, scale)
        if pred.shape != gt.shape:
            raise DataError(f"prediction {p.name} is {pred.shape[1]}x{pred.shape[0]}, ground truth {g.name} is "
                            f"{gt.shape[1]}x{gt.shape[0]}")  # fmt: skip
        if not (gt > 0).any():
            raise DataError(f"ground truth is empty (no pixel > 0): {g}")
        m = compute_metrics(pred, gt)
        per_image.append(m)
        frames.append({"id": g.stem, "prediction": str(p), **m.as_dict()})
    return {"source": {"pred_dir": str(pred_dir), "gt_dir": str(gt_dir)}, "frames": frames,
            "mean": mean_metrics(per_image).as_dict(), "num_frames": len(frames)}  # fmt: skip


# ------------------------------------------------------------------------------------------------------------ model
def iter_frames(dataset: str, root: Path | None, *, limit: int | None = None, **kw: Any) -> Iterator[Any]:
    """Yield `augment.Frame`s of a data set: kitti (train/val via kw split), val_selection_cropped, kitti_frame,
    rgbd, synthetic.  `limit` caps the number of frames (None: all; synthetic: 4).

    Raises DataError for a `limit` below 1 or an unknown data set, ShapeError for a synthetic size beyond
    `core.files.MAX_IMAGE_PIXELS`.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be an integer >= 1 (or None for all frames), got {limit!r}")
    if dataset == "kitti_frame":
        from depth_completion_ros.data.kitti import load_shared_frame

        if root is None:
            raise DataError("--root (the kitti_dc_frame folder) is required for kitti_frame")
        cams = ("image_02", "image_03")[: limit if limit is not None else 2]
        for cam in cams:
            yield load_shared_frame(root, cam)
        return
    if dataset in ("kitti", "val_selection_cropped"):
        from depth_completion_ros.data.kitti import KittiDepthCompletion

        if root is None:
            raise DataError(f"--root is required for {dataset}")
        split = "val_selection_cropped" if dataset == "val_selection_cropped" else kw.get("split", "val")
        ds: Any = KittiDepthCompletion(root, split, raw_root=kw.get("raw_root"), limit=limit)
    elif dataset == "rgbd":
        from depth_completion_ros.data.rgbd import RGBDDataset, SparseSamplingConfig

        if root is None:
            raise DataError("--root is required for rgbd")
        ds = RGBDDataset(root, sampling=SparseSamplingConfig(mode=kw.get("sampling", "random")),
                         depth_scale=kw.get("depth_scale", 1000.0), limit=limit, deterministic=True)  # fmt: skip
    elif dataset == "synthetic":
        from depth_completion_ros.data.synthetic import SyntheticDataset

        n = limit if limit is not None else 4
        ds = SyntheticDataset(n, seed=kw.get("seed", 1_000_000), kind=kw.get("kind", "outdoor"),
                              width=kw.get("width", 1242), height=kw.get("height", 375))  # fmt: skip
    else:
        raise DataError(f"unknown data set {dataset!r}")
    for i in range(len(ds)):
        yield ds.frame(i)


def evaluate_completer(
    complete: Any,
    frames: Iterable[Any],
    *,
    out_dir: Path | None = None,
    panels: int = 0,
    name: str = "",
) -> dict[str, Any]:
    """Run `complete(rgb, sparse) -> (depth, confidence)` over frames; per-image metrics + sparsification.

    Writes panels/<id>.png for the first `panels` frames when `out_dir` is given.
    """
    rows = []
    per_image: list[DepthMetrics] = []
    curves = []
    for k, f in enumerate(frames):
        if not (f.gt > 0).any():
            raise DataError(f"{f.id}: ground truth is empty (no pixel > 0)")
        t0 = time.perf_counter()
        depth, conf = complete(f.rgb, f.sparse)
        ms = (time.perf_counter() - t0) * 1000.0
        m = compute_metrics(depth, f.gt)
        sp = sparsification(depth, f.gt, conf)
        per_image.append(m)
        curves.append(sp)
        rows.append({"id": f.id, **m.as_dict(), "ause_mm": sp["ause_mm"], "rmse_ratio_top50": sp["rmse_ratio_top50"],
                     "time_ms": ms})  # fmt: skip
        if out_dir is not None and k < panels:
            safe = f.id.replace("/", "__")
            write_panel(out_dir / "panels" / f"{safe}.png", f.rgb, f.sparse, depth, conf, f.gt, title=f"{name} {f.id}")
    if not rows:
        raise DataError("no frames to evaluate")
    fr = curves[0]["fractions"]
    spars = {
        "fractions": fr,
        "rmse_mm": np.mean([c["rmse_mm"] for c in curves], axis=0).tolist(),
        "oracle_rmse_mm": np.mean([c["oracle_rmse_mm"] for c in curves], axis=0).tolist(),
        "ause_mm": float(np.mean([c["ause_mm"] for c in curves])),
        "rmse_ratio_top50": float(np.mean([c["rmse_ratio_top50"] for c in curves])),
    }
    return {"frames": rows, "mean": mean_metrics(per_image).as_dict(), "sparsification": spars,
            "num_frames": len(rows)}  # fmt: skip


# ------------------------------------------------------------------------------------------------------------ plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_panel(
    path: Path,
    rgb: np.ndarray,
    sparse: np.ndarray,
    pred: np.ndarray,
    confidence: np.ndarray,
    gt: np.ndarray,
    *,
    title: str = "",
) -> Path:
    """PNG panel RGB | sparse | dense | confidence | |error| (at ground-truth pixels), each with a colour bar.

    Depths are (H, W) metres (0 = none); confidence (H, W) in [0, 1].  Wide images stack vertically.
    """
    plt = _plt()
    h, w = pred.shape
    vertical = w > 1.6 * h
    valid_gt = gt > 0
    vmax = float(np.percentile(gt[valid_gt], 99)) if valid_gt.any() else float(np.percentile(pred, 99))
    err = np.where(valid_gt, np.abs(pred - gt), np.nan)
    sp = np.where(sparse > 0, sparse, np.nan)
    if sparse.shape[0] * sparse.shape[1] > 0:  # dilate the sparse points for visibility
        dil = cv2.dilate(np.nan_to_num(sp, nan=0.0).astype(np.float32), np.ones((3, 3), np.uint8))
        sp = np.where(dil > 0, dil, np.nan)
    errs = err[valid_gt]
    emax = float(np.percentile(errs, 99)) if errs.size else 1.0
    panels = [
        ("RGB", rgb, None, None),
        ("sparse input (m)", sp, "turbo_r", (0.0, vmax)),
        ("dense prediction (m)", pred, "turbo_r", (0.0, vmax)),
        ("confidence", confidence, "viridis", (0.0, 1.0)),
        ("|error| at ground truth (m)", err, "hot", (0.0, max(emax, 1e-3))),
    ]
    n = len(panels)
    if vertical:
        fig = plt.figure(figsize=(12, n * (0.78 * 12 * h / w + 0.4) + 0.3))
        gs = fig.add_gridspec(n, 2, width_ratios=[60, 1], wspace=0.02, hspace=0.25)
        cells = [(gs[i, 0], gs[i, 1]) for i in range(n)]
    else:
        fig = plt.figure(figsize=(4.2 * n, 4.2 * h / w + 0.8))
        gs = fig.add_gridspec(2, n, height_ratios=[30, 1], hspace=0.05, wspace=0.08)
        cells = [(gs[0, i], gs[1, i]) for i in range(n)]
    for (cell, bar_cell), (label, img, cmap, lim) in zip(cells, panels, strict=True):
        ax = fig.add_subplot(cell)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
        if cmap is None:
            ax.imshow(img)
            continue
        cm = plt.get_cmap(cmap).with_extremes(bad="black")
        im = ax.imshow(np.ma.masked_invalid(img), cmap=cm, vmin=lim[0], vmax=lim[1], interpolation="nearest")
        fig.colorbar(im, cax=fig.add_subplot(bar_cell), orientation="vertical" if vertical else "horizontal")
    if title:
        fig.suptitle(title, fontsize=10)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=80, bbox_inches="tight", format=path.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return path


def plot_sparsification(path: Path, curves: dict[str, dict[str, Any]]) -> Path:
    """Sparsification plot: RMSE (mm) vs fraction of least-confident pixels removed, per method + oracle."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, c in curves.items():
        line = ax.plot(c["fractions"], c["rmse_mm"], label=f"{label} (AUSE {c['ause_mm']:.0f} mm)")[0]
        ax.plot(c["fractions"], c["oracle_rmse_mm"], "--", color=line.get_color(), label=f"{label} oracle")
    ax.set_xlabel("fraction of pixels removed (least confident first)")
    ax.set_ylabel("RMSE of remaining pixels (mm)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return path


def format_table(summary: dict[str, Any], title: str = "") -> str:
    """Fixed-width table: one row per frame and the mean over images."""
    head = f"{'frame':<40}" + "".join(f"{h:>{len(fmt.format(0.0))}} " for _, h, fmt in _COLUMNS)
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for r in [*summary["frames"], {"id": f"MEAN over {summary['num_frames']} image(s)", **summary["mean"]}]:
        name = str(r["id"])[-40:]
        lines.append(f"{name:<40}" + "".join(fmt.format(r[k]) + " " for k, _, fmt in _COLUMNS))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the sub-command's options."""
    g = parser.add_argument_group("prediction PNGs against ground truth")
    g.add_argument("--pred-dir", type=Path, default=None, help="predicted depth PNGs (uint16)")
    g.add_argument("--gt-dir", type=Path, default=None, help="ground-truth depth PNGs (uint16)")
    g.add_argument("--scale", type=positive_float, default=KITTI_PNG_SCALE, help="PNG value per metre (KITTI 256)")
    m = parser.add_argument_group("model over a data set")
    m.add_argument("--dataset", choices=("kitti", "val_selection_cropped", "kitti_frame", "rgbd", "synthetic"))
    m.add_argument("--root", type=Path, default=None, help="data set root")
    m.add_argument("--raw-root", type=Path, default=None, help="KITTI raw drives (kitti)")
    m.add_argument("--split", default="val", help="kitti split (train | val)")
    m.add_argument("--sampling", default="random", help="rgbd sparse sampling mode")
    m.add_argument("--depth-scale", type=positive_float, default=1000.0, help="rgbd depth PNG value per metre")
    m.add_argument("--method", action="append", choices=("default", "cspn"), default=None,
                   help="completer(s) to evaluate (repeatable; default: default)")  # fmt: skip
    m.add_argument("--checkpoint", type=Path, default=None, help="safetensors checkpoint for method cspn")
    m.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    m.add_argument("--limit", type=positive_int, default=None, help="at most this many frames")
    m.add_argument("--synthetic-size", type=positive_int, nargs=2, default=(1242, 375), metavar=("W", "H"))
    parser.add_argument("--out", type=Path, default=None, help="output folder (summary.json, panels, plots)")
    parser.add_argument("--panels", type=nonneg_int, default=4, help="write a panel for the first N frames")


def _json_num(obj: Any) -> Any:
    """numpy scalars as Python numbers for json."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _fail(msg: str) -> int:
    print(f"depth-completion evaluate: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Evaluate; returns 0, or 2 on bad input (one-line message on stderr)."""
    try:
        if args.pred_dir is not None or args.gt_dir is not None:
            if args.pred_dir is None or args.gt_dir is None:
                return _fail("--pred-dir and --gt-dir go together")
            summary = evaluate_predictions(args.pred_dir, args.gt_dir, scale=args.scale)
            print(format_table(summary, f"predictions {args.pred_dir} vs {args.gt_dir}"))
        elif args.dataset is not None:
            summary = _run_models(args)
        else:
            return _fail("give --pred-dir/--gt-dir or --dataset")
    except (DepthCompletionError, ValueError, OSError) as exc:
        return _fail(one_line(exc))
    if args.out is not None:
        atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1, default=_json_num))
        print(f"wrote {args.out / 'summary.json'}")
    return 0


def _run_models(args: argparse.Namespace) -> dict[str, Any]:
    from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter

    methods = args.method or ["default"]
    kw = {"split": args.split, "raw_root": args.raw_root, "sampling": args.sampling, "depth_scale": args.depth_scale,
          "width": args.synthetic_size[0], "height": args.synthetic_size[1]}  # fmt: skip
    completers = {  # built first: a bad checkpoint fails before any data is read
        m: DepthCompleter(CompleterConfig(method=m, checkpoint=args.checkpoint, device=args.device)) for m in methods
    }
    frames = list(iter_frames(args.dataset, args.root, limit=args.limit, **kw))
    results: dict[str, Any] = {}
    curves = {}
    for method, completer in completers.items():
        label = f"{method}: {completer.model_name}"
        res = evaluate_completer(
            completer.complete, frames, out_dir=args.out / method if args.out else None, panels=args.panels, name=label
        )
        res["model"] = completer.model_name
        results[method] = res
        curves[method] = res["sparsification"]
        print(format_table(res, f"{label} on {args.dataset} ({len(frames)} frame(s))"))
        s = res["sparsification"]
        print(f"sparsification: AUSE {s['ause_mm']:.1f} mm, RMSE(top-50% confident)/RMSE {s['rmse_ratio_top50']:.3f}\n")
    if args.out is not None:
        plot_sparsification(args.out / "sparsification.png", curves)
    return {"source": {"dataset": args.dataset, "root": str(args.root) if args.root else None}, "methods": results}
