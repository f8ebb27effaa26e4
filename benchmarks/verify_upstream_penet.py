"""Equivalence and speed of our PENet / ENet against the authors' code (JUGGHM/PENet_ICRA2021) at equal weights.

    python benchmarks/verify_upstream_penet.py --penet-src DIR [--repeats 3] [--json out.json]

DIR is a folder with the authors' sources (model.py, basic.py, ...) or a bare git directory of their repository
(extracted with `git archive HEAD`).  Their sources are copied to a temporary folder and patched there only
(`.cuda()` calls removed; imports of scipy / scikit-image, which the code paths used here never call, stubbed).
Nothing of them is kept.

For ENet and PENet (PENet_C2, dilation rate 2, as released): their model is built with seeded random weights
(their initialization, plus random batch-norm statistics and a rescaled output head so depths are in a realistic
range), saved in their checkpoint format (dict with model, epoch, args Namespace, their metrics.Result as
best_result, optimizer state), imported into ours, and both run on the shared KITTI frame cropped as their loader
does (bottom 352 x 1216 crop; their K from their calibration file, cx - 13 and cy - 11.5; ours gets the true K of
the crop, cx - 13 and cy - 23, and applies its documented c_y shift).  Prints max |depth difference| in metres
(and relative) for our model as built and after `prepare_for_inference` (fused conv+BN, oneDNN fused ops, Winograd:
what the completer runs), then the per-frame CPU time of each (median of `--repeats` rounds in which the
implementations take turns), with the load average and CPU count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import import_with_cli, print_table, write_json  # noqa: E402

from depth_completion_ros.core.allocator import configure_allocator  # noqa: E402
from depth_completion_ros.core.published import penet as ours  # noqa: E402
from depth_completion_ros.core.published.base import format_manifest  # noqa: E402

CROP_H, CROP_W = 352, 1216


# ------------------------------------------------------------------------------------------ authors' sources


def extract_sources(src: Path, dst: Path) -> Path:
    """Copy (folder) or extract (bare git dir) the authors' sources into `dst`; patch the copy for the CPU."""
    if (src / "model.py").is_file():
        shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", "images"))
    elif (src / "HEAD").is_file() and (src / "objects").is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", f"--git-dir={src}", "archive", "HEAD"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(dst)], input=archive.stdout, check=True)
    else:
        raise SystemExit(f"--penet-src {src}: neither a folder with model.py nor a bare git directory")
    for path in dst.rglob("*.py"):
        text = path.read_text()
        patched = text.replace(".cuda()", "")
        patched = patched.replace("import scipy.ndimage.interpolation as itpl", "itpl = None")
        patched = patched.replace("import skimage.transform", "skimage = None")
        if patched != text:
            path.write_text(patched)
    return dst


def authors_args(network_model: str) -> argparse.Namespace:
    """Their main.py defaults (as the released models were run), for network model "e" or "pe"."""
    return argparse.Namespace(
        network_model=network_model, workers=4, epochs=100, start_epoch=0, start_epoch_bias=0, criterion="l2",
        batch_size=1, lr=1e-3, weight_decay=1e-6, print_freq=10, resume="", data_folder="", data_folder_rgb="",
        data_folder_save="", input="rgbd", val="select", jitter=0.1, rank_metric="rmse", evaluate="",
        freeze_backbone=False, test=False, cpu=True, not_random_crop=False, random_crop_height=320,
        random_crop_width=1216, convolutional_layer_encoding="xyz", dilation_rate=2, result="../results",
        use_rgb=True, use_d=True, use_g=False, val_h=CROP_H, val_w=CROP_W,
    )  # fmt: skip


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random batch-norm statistics and affine terms (their init leaves BN an identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)


def rescale_heads(enet: torch.nn.Module, feed: dict, target_mean: float = 20.0) -> None:
    """Scale the depth channel of both output heads so the coarse depth has a realistic mean (metres)."""
    with torch.no_grad():
        rgb_depth, d_depth, _ = _enet_outputs(enet, feed)
        for head, depth in ((enet.rgb_decoder_output[1], rgb_depth), (enet.decoder_layer6[1], d_depth)):
            mean = float(depth.mean())
            if mean > 0:
                head.weight[0] *= target_mean / mean
                head.bias[0] *= target_mean / mean


def _enet_outputs(enet: torch.nn.Module, feed: dict) -> tuple:
    mode = enet.args.network_model
    enet.args.network_model = "e"
    try:
        return enet(feed)
    finally:
        enet.args.network_model = mode


def save_authors_checkpoint(model: torch.nn.Module, args: argparse.Namespace, path: Path, extra: dict | None) -> None:
    """Their checkpoint format (helper.save_checkpoint): model, epoch, args, best_result, optimizer."""
    import metrics  # the authors' module, from the temporary folder

    state = model.state_dict()
    if extra:
        state.update(extra)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99))
    result = metrics.Result()
    result.set_to_worst()
    torch.save(
        {"epoch": 11, "model": state, "best_result": result, "optimizer": optimizer.state_dict(), "args": args}, path
    )


# ------------------------------------------------------------------------------------------ inputs


def read_frame(data: Path, tmp_src: Path) -> dict:
    """The shared KITTI frame cropped as the authors' val loader does, their K and position map, and our K."""
    import CoordConv  # authors' modules, from the temporary folder
    from dataloaders import kitti_loader, transforms

    frame = data / "kitti_dc_frame"
    bgr = cv2.imread(str(frame / "depth_completion" / "test_image.png"), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    png = cv2.imread(str(frame / "depth_completion" / "velodyne_raw_image_02.png"), cv2.IMREAD_UNCHANGED)
    sparse = (png.astype(np.float64) / 256.0)[..., None]
    crop = transforms.BottomCrop((CROP_H, CROP_W))
    rgb_c, sparse_c = crop(rgb), crop(sparse)
    position = crop(CoordConv.AddCoordsNp(CROP_H, CROP_W).call())
    cwd = os.getcwd()
    os.chdir(tmp_src)  # their load_calib reads a path relative to their repository root
    try:
        K_theirs = kitti_loader.load_calib()
    finally:
        os.chdir(cwd)
    to_t = transforms.ToTensor()
    feed = {
        "rgb": to_t(rgb_c).float()[None],
        "d": to_t(sparse_c).float()[None],
        "position": to_t(position).float()[None],
        "K": torch.from_numpy(K_theirs).float()[None],
    }
    # ours: the true K of the bottom crop, from the frame's own calibration (P_rect_02)
    calib = {}
    for line in (frame / "raw" / "calib_cam_to_cam.txt").read_text().splitlines():
        key, _, vals = line.partition(":")
        calib[key] = vals
    P = np.array(calib["P_rect_02"].split(), dtype=np.float64).reshape(3, 4)
    K_true = P[:, :3].copy()
    H, W = rgb.shape[:2]
    K_true[0, 2] -= round((W - CROP_W) / 2)
    K_true[1, 2] -= H - CROP_H
    return {"feed": feed, "K_ours": torch.from_numpy(K_true).float()[None], "K_theirs": K_theirs}


# ------------------------------------------------------------------------------------------ main


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms of each function over `repeats` rounds, the functions taking turns in every round (a shared, busy
    machine then slows all of them alike); one warm-up call each."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in samples.items()}


def propagation_stage(authors_basic, encoders: dict, repeats: int, seed: int) -> tuple[list, list]:
    """One DA-CSPN++ stage at 1216x352 (kernels 3, 5, 7; 6 steps each; dilation 1; gated re-imposition) from the
    same raw guidance: the authors' normalization, encoder flip, unfold propagation vs ours.  Returns the
    comparison row and the timing row."""
    from depth_completion_ros.core.kernel_propagation import normalized_scatter_to_gather, propagate_kxk

    g = torch.Generator().manual_seed(seed)
    H, W = CROP_H, CROP_W
    h0 = torch.rand(1, 1, H, W, generator=g) * 60 + 2
    sparse = (torch.rand(1, 1, H, W, generator=g) < 0.05) * (torch.rand(1, 1, H, W, generator=g) * 60 + 2)
    gate = torch.sigmoid(torch.randn(1, 1, H, W, generator=g))
    mask = gate * (sparse > 0)
    raws = {k: torch.randn(1, k * k - 1, H, W, generator=g) for k in (3, 5, 7)}

    def theirs():
        out = []
        for k, raw in raws.items():
            gen = authors_basic.CSPNGenerateAccelerate(8, k)
            gen.generate = torch.nn.Identity()  # their normalization and centre insertion, from the raw guidance
            kernel = authors_basic.kernel_trans(gen(raw), encoders[k])
            prop = authors_basic.CSPNAccelerate(k, dilation=1, padding=k // 2, stride=1)
            depth = h0
            for _ in range(6):
                depth = prop(kernel, depth, h0)
                depth = mask * sparse + (1 - mask) * depth
            out.append(depth)
        return torch.cat(out, 1)

    def mine():
        out = []
        for k, raw in raws.items():
            w = normalized_scatter_to_gather(raw, k)
            out.append(propagate_kxk(h0, w, kernel_size=k, iterations=6, sparse=sparse, gate=gate))
        return torch.cat(out, 1)

    ref, got = theirs(), mine()
    row = compare("DA-CSPN++ stage (3 kernels x 6 steps)", ref, got, 1.0)
    t = interleaved({"authors": theirs, "ours": mine}, repeats) if repeats > 0 else None
    timing = [] if t is None else ["DA-CSPN++ stage", t["authors"], t["ours"], t["ours"], t["ours"] / t["authors"],
                                   t["ours"] / t["authors"]]  # fmt: skip
    return row, timing


def compare(name: str, theirs: torch.Tensor, mine: torch.Tensor, valid_depth: float) -> list[object]:
    diff = (theirs - mine).abs()
    rel = diff / theirs.abs().clamp_min(1e-3)
    return [
        name,
        f"{float(theirs.min()):.2f} .. {float(theirs.max()):.2f}",
        f"{float(diff.max()):.3g}",
        f"{float(rel.max()):.3g}",
        f"{float(diff[theirs.abs() > valid_depth].max()) if (theirs.abs() > valid_depth).any() else 0.0:.3g}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--penet-src", type=Path, required=True, help="authors' sources: folder or bare git dir")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="shared data folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model (0: no timing)")
    parser.add_argument("--models", default="enet,penet")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--write-authors-manifests",
        type=Path,
        default=None,
        metavar="DIR",
        help="write enet_authors.json / penet_authors.json ({their key: shape}; PENet: their inference and training "
        "models' keys together) into DIR and exit",
    )
    args = parser.parse_args(argv)
    if args.write_authors_manifests is not None:
        with tempfile.TemporaryDirectory(prefix="penet_src_") as tmp:
            src = extract_sources(args.penet_src.resolve(), Path(tmp) / "src")
            sys.path.insert(0, str(src))
            import model as authors_model  # their module, from the temporary folder

            def shapes(m: torch.nn.Module) -> dict[str, list[int]]:
                return {k: list(v.shape) for k, v in m.state_dict().items()}

            enet = shapes(authors_model.ENet(authors_args("e")))
            penet = shapes(authors_model.PENet_C2_train(authors_args("pe")))
            penet.update(shapes(authors_model.PENet_C2(authors_args("pe"))))
            for name, keys in (("enet_authors.json", enet), ("penet_authors.json", penet)):
                path = args.write_authors_manifests / name
                path.write_text(format_manifest(keys))
                print(f"{path}: {len(keys)} keys")
        return 0
    if not (args.data / "kitti_dc_frame").is_dir():
        print(f"no shared KITTI frame under {args.data}", file=sys.stderr)
        return 2
    torch.set_grad_enabled(False)
    configure_allocator()  # as the node and CLIs do; helps both implementations alike
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="penet_src_") as tmp:
        src = extract_sources(args.penet_src.resolve(), Path(tmp) / "src")
        sys.path.insert(0, str(src))
        import model as authors_model  # their module, from the temporary folder

        frame = read_frame(args.data, src)
        feed, K_ours = frame["feed"], frame["K_ours"]
        print(f"authors' K (their calibration file): fx {frame['K_theirs'][0, 0]:.4f} cx {frame['K_theirs'][0, 2]:.4f}"
              f" fy {frame['K_theirs'][1, 1]:.4f} cy {frame['K_theirs'][1, 2]:.4f}")  # fmt: skip
        print(f"our K (true K of the crop):           fx {float(K_ours[0, 0, 0]):.4f} cx {float(K_ours[0, 0, 2]):.4f}"
              f" fy {float(K_ours[0, 1, 1]):.4f} cy {float(K_ours[0, 1, 2]):.4f}  (+ cy_shift_px 11.5)")  # fmt: skip
        rgb, sparse = feed["rgb"], feed["d"]
        rows, timing = [], []
        for name in args.models.split(","):
            torch.manual_seed(args.seed)
            if name == "enet":
                theirs_m = authors_model.ENet(authors_args("e")).eval()
                randomize(theirs_m, args.seed)
                rescale_heads(theirs_m, feed)
                extra = None
            else:
                theirs_m = authors_model.PENet_C2(authors_args("pe")).eval()
                randomize(theirs_m, args.seed)
                rescale_heads(theirs_m.backbone, feed)
                train_m = authors_model.PENet_C2_train(authors_args("pe"))  # its extra (unused) layers, as released
                extra = {k: v for k, v in train_m.state_dict().items() if k.startswith(("dimhalf_s2.", "att_12."))}

            def run_theirs(m=theirs_m, name=name):
                out = m(feed)
                return out[2] if name == "enet" else out

            ref = run_theirs()
            pth = Path(tmp) / f"{name}.pth.tar"
            save_authors_checkpoint(theirs_m, authors_args("e" if name == "enet" else "pe"), pth, extra)
            mine = import_with_cli(name, pth)
            got = mine.infer(rgb, sparse, K_ours)
            rows.append(compare(f"{name} (as built)", ref, got, 1.0))
            fast = ours.prepare_for_inference(import_with_cli(name, pth))
            got_fast = fast.infer(rgb, sparse, K_ours)
            rows.append(compare(f"{name} (prepared: BN folded, oneDNN, Winograd)", ref, got_fast, 1.0))
            results[name] = {
                "max_abs_m": float((ref - got).abs().max()),
                "max_abs_m_prepared": float((ref - got_fast).abs().max()),
            }
            if args.repeats > 0:
                t = interleaved(
                    {
                        "authors": run_theirs,
                        "ours": lambda m=mine: m.infer(rgb, sparse, K_ours),
                        "prepared": lambda m=fast: m.infer(rgb, sparse, K_ours),
                    },
                    args.repeats,
                )
                timing.append([name, t["authors"], t["ours"], t["prepared"], t["prepared"] / t["authors"],
                               t["ours"] / t["authors"]])  # fmt: skip
                results[name].update(authors_ms=t["authors"], ours_ms=t["ours"], ours_prepared_ms=t["prepared"])
            if name == "penet":
                import basic  # the authors' module, from the temporary folder

                encoders = {3: theirs_m.encoder3, 5: theirs_m.encoder5, 7: theirs_m.encoder7}
                row, trow = propagation_stage(basic, encoders, args.repeats, args.seed)
                rows.append(row)
                if trow:
                    timing.append(trow)
            del theirs_m, mine, fast
        print_table(
            f"max |depth difference| at equal weights, KITTI frame {CROP_W}x{CROP_H}, float32 CPU",
            ["model", "authors' depth range (m)", "max |Δ| (m)", "max rel", "max |Δ| where |depth| > 1 m"],
            rows,
        )
        if timing:
            print_table(
                f"CPU time per frame (ms, median of {args.repeats}), {CROP_W}x{CROP_H}, torch threads "
                f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {os.getloadavg()}",
                ["model", "authors", "ours (as built)", "ours (prepared)", "prepared/authors", "as built/authors"],
                timing,
            )
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
