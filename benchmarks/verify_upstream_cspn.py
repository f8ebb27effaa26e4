"""Equivalence (and speed) of our CSPN NYU model (`core/published/cspn_nyu.py`) against the authors' code.

    .venv/bin/python benchmarks/verify_upstream_cspn.py --cspn-src DIR [--bench] [--write-authors-manifest]

DIR: a folder with the authors' sources (XinJCheng/CSPN, its root or its `cspn_pytorch` folder), or a bare git
directory of that repository (extracted with `git archive`).  Nothing of it is kept: the sources are copied into
a temporary folder and patched there only (`.cuda()` removed, `np.int` -> `int`); the third-party modules their
data loader imports but never uses on this path (pandas, h5py, scikit-image, SciPy) are empty stand-ins, and
torchvision (not installed here) is a stand-in of the five transforms their NYU loader calls, written after
torchvision 0.2 (their PyTorch 0.4 era): `Resize` (PIL bilinear, short side), `CenterCrop` (rounded offsets),
`ToTensor` (/255), `Normalize`, `ToPILImage` (``mul(255).byte()``: truncates and wraps modulo 256).

For each released variant ("pos" = 8sum_abs, "non-pos" = 8sum):
  1. build the authors' `torch_resnet_cspn_nyu.resnet50` with seeded random weights (BatchNorm statistics from one
     training-mode pass on the frame, random affine BatchNorm parameters), run it once (their propagation then owns
     its summing convolution, as in a trained model) and save it as their train.py does:
     ``torch.save(DataParallel(net).state_dict(), "best_model.pth")``;
  2. import that file into our model (`_import`);
  3. run both on the shared TUM frame prepared by their NYU evaluation loader (`eval_nyu_dataset_loader`, split
     "val": Resize(240), CenterCrop(228, 304), normalization, 500 sparse samples with a fixed seed) and print
     max |Δdepth| in metres: ours with `authors_reimpose` (their behaviour) — target ≤ 1e-3 m in float32 on the
     CPU — and ours with the correct re-imposition of the measurements.

`--bench` adds CPU timings measured in the same run (with the load average and CPU count): the 24-step propagation
at 1216×352 (their `Affinity_Propagate` vs our mapping + normalization + `cspn_propagate`, outputs compared first)
and the whole model per frame at its native 228×304.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import import_with_cli  # noqa: E402

from depth_completion_ros.core.propagation import cspn_propagate, normalize_affinity  # noqa: E402
from depth_completion_ros.core.published.cspn_nyu import (  # noqa: E402
    ARCHITECTURE,
    CSPNNYUConfig,
    CSPNNYUNet,
    authors_to_gather,
)

TUM = ROOT.parent / "shared" / "data" / "tum_rgbd_frame"
TUM_DEPTH_SCALE = 5000.0  # TUM depth PNG: metres = value / 5000
MANIFESTS = ROOT / "depth_completion_ros" / "core" / "published" / "manifests"
VARIANTS = (("pos", "8sum_abs"), ("non-pos", "8sum"))


# --------------------------------------------------------------------------------------------------------------
# The authors' sources, in a temporary folder


def extract_sources(src: Path, dest: Path) -> Path:
    """Copy (or `git archive`) the authors' `cspn_pytorch` folder into `dest`; returns the copy."""
    if (src / "HEAD").is_file() and (src / "objects").is_dir():  # a bare git directory
        archive = subprocess.run(
            ["git", f"--git-dir={src}", "archive", "HEAD", "cspn_pytorch"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return dest / "cspn_pytorch"
    for cand in (src, src / "cspn_pytorch"):
        if (cand / "models" / "torch_resnet_cspn_nyu.py").is_file():
            shutil.copytree(cand, dest / "cspn_pytorch")
            return dest / "cspn_pytorch"
    raise SystemExit(f"error: no cspn_pytorch/models/torch_resnet_cspn_nyu.py under {src}")


def patch_sources(code: Path, *, keep_cuda: bool = False) -> None:
    """Current NumPy / PyTorch: `np.int(` -> `int(`, `copy=False` dropped; for the CPU `.cuda()` removed."""
    for path in [*code.glob("*.py"), *code.glob("models/*.py")]:
        text = path.read_text()
        new = text.replace("np.int(", "int(").replace(", copy=False", "")
        if not keep_cuda:
            new = new.replace(".cuda()", "")
        if new != text:
            path.write_text(new)


_TORCHVISION_STANDIN = '''
"""Stand-in of the torchvision 0.2 transforms the authors' NYU loader calls (torchvision is not installed)."""
import numpy as np
import torch
from PIL import Image


class Resize:
    def __init__(self, size, interpolation=Image.BILINEAR):
        self.size, self.interpolation = size, interpolation

    def __call__(self, img):
        w, h = img.size
        s = self.size
        if (w <= h and w == s) or (h <= w and h == s):
            return img
        if w < h:
            return img.resize((s, int(s * h / w)), self.interpolation)
        return img.resize((int(s * w / h), s), self.interpolation)


class CenterCrop:
    def __init__(self, size):
        self.size = size

    def __call__(self, img):
        w, h = img.size
        th, tw = self.size
        i, j = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
        return img.crop((j, i, j + tw, i + th))


class ToTensor:
    def __call__(self, pic):
        a = np.asarray(pic)
        if pic.mode == "F":
            return torch.from_numpy(a.astype(np.float32)).unsqueeze(0)
        return torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous().float().div(255)


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, tensor):
        for t, m, s in zip(tensor, self.mean, self.std):
            t.sub_(m).div_(s)
        return tensor


class ToPILImage:
    def __call__(self, pic):
        if pic.dtype == torch.float32:
            pic = pic.mul(255).byte()
        return Image.fromarray(np.transpose(pic.numpy(), (1, 2, 0)))


class ColorJitter:
    def __init__(self, *args, **kwargs):
        pass
'''


def install_stand_ins(folder: Path) -> None:
    """Empty stand-ins of unused imports and the torchvision stand-in, on sys.path first."""
    tv = folder / "torchvision"
    tv.mkdir()
    (tv / "__init__.py").write_text("from . import transforms, utils\n")
    (tv / "transforms.py").write_text(_TORCHVISION_STANDIN)
    (tv / "utils.py").write_text("")
    for name in ("pandas", "h5py", "skimage", "scipy"):
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text("")
    (folder / "skimage" / "io.py").write_text("")
    (folder / "skimage" / "transform.py").write_text("")
    (folder / "scipy" / "ndimage.py").write_text("")
    sys.path.insert(0, str(folder))


# --------------------------------------------------------------------------------------------------------------
# Input: the TUM frame through their NYU evaluation loader


def prepare_frame(code: Path, seed: int, n_sample: int, tum: Path = TUM) -> dict[str, torch.Tensor]:
    """Their `eval_nyu_dataset_loader.NyuDepthDataset(split="val")[0]` on the TUM frame: rgbd (4, 228, 304) as
    their network reads it, raw_rgb (3, 228, 304) in [0, 1], depth (1, 228, 304) metres."""
    import cv2

    bgr = cv2.imread(str(tum / "TUM_color.png"), cv2.IMREAD_COLOR)
    depth = cv2.imread(str(tum / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)
    if bgr is None or depth is None:
        raise SystemExit(f"error: cannot read the TUM frame under {tum}")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    metres = depth.astype(np.float32) / TUM_DEPTH_SCALE

    sys.path.insert(0, str(code))
    import eval_nyu_dataset_loader as loader  # the authors' loader (patched copy)

    ds = loader.NyuDepthDataset.__new__(loader.NyuDepthDataset)
    ds.rgbd_frame = types.SimpleNamespace(iloc={(0, 0): "tum.h5"})  # one row; read through load_h5 below
    ds.root_dir, ds.split, ds.input_format, ds.n_sample = ".", "val", "hdf5", n_sample
    ds.load_h5 = lambda _name: (rgb, metres)
    np.random.seed(seed)  # noqa: NPY002 - their loader draws from the legacy global generator
    torch.manual_seed(seed)
    return ds[0]


# --------------------------------------------------------------------------------------------------------------
# Models


def build_authors(code: Path, norm_type: str, seed: int, rgbd: torch.Tensor) -> nn.Module:
    """Their resnet50 CSPN model with seeded random weights, BatchNorm statistics from one training-mode pass."""
    sys.path.insert(0, str(code / "models"))
    import torch_resnet_cspn_nyu as authors  # the authors' model (patched copy)

    torch.manual_seed(seed)
    net = authors.resnet50(cspn_config={"step": 24, "norm_type": norm_type})
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 1.0  # running statistics := this pass's
        net.train()
        net(rgbd[None])
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.empty_like(m.weight).uniform_(0.5, 1.5, generator=gen))
                m.bias.copy_(torch.empty_like(m.bias).uniform_(-0.1, 0.1, generator=gen))
                m.momentum = 0.1
        # Their output is linear in the depth head's weights (H0 and its propagation): scale them so the random
        # model predicts within ±10 m (NYU's range), so that differences in metres mean what they say.
        net.eval()
        peak = net(rgbd[None]).abs().max()
        net.gud_up_proj_layer5.conv1.weight.mul_(10.0 / peak)
    return net


def save_authors_checkpoint(net: nn.Module, path: Path) -> None:
    """As their train.py: ``torch.save(net.state_dict())`` of the DataParallel-wrapped model ("module." keys)."""
    torch.save(nn.DataParallel(net).state_dict(), path)


# --------------------------------------------------------------------------------------------------------------
# Timing


def _median_s(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of `repeats` calls after `warmup` calls.  On a shared machine the CPU
    time (this process's, all its threads) is the steadier figure: being descheduled does not count."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def _fmt(label: str, t: tuple[float, float], base: tuple[float, float] | None = None) -> str:
    text = f"{label} {t[0] * 1e3:8.1f} ms wall {t[1] * 1e3:8.1f} ms CPU"
    if base is not None:
        text += f" (ratio {t[0] / base[0]:.3f} wall, {t[1] / base[1]:.3f} CPU)"
    return text


def bench_propagation(code: Path, norm_type: str, repeats: int) -> None:
    """24-step propagation at 1216×352: their `Affinity_Propagate` vs ours (mapping + normalization included)."""
    sys.path.insert(0, str(code / "models"))
    import cspn as authors_cspn  # the authors' propagation (patched copy)

    H, W = 352, 1216
    gen = torch.Generator().manual_seed(3)
    guidance = torch.randn(1, 8, H, W, generator=gen)
    blur = torch.rand(1, 1, H, W, generator=gen) * 10
    sparse = (torch.rand(1, 1, H, W, generator=gen) < 0.05) * torch.rand(1, 1, H, W, generator=gen) * 10
    prop = authors_cspn.Affinity_Propagate(24, 3, norm_type=norm_type)

    def theirs() -> torch.Tensor:
        with torch.no_grad():
            return prop(guidance, blur, sparse)

    def ours(reimpose_h0: bool = True) -> torch.Tensor:
        with torch.inference_mode():
            aff = normalize_affinity(authors_to_gather(guidance), norm_type)
            if reimpose_h0:
                aff.mul_(sparse <= 0)
                return cspn_propagate(blur, aff, iterations=24, normalized=True)
            return cspn_propagate(blur, aff, iterations=24, sparse=sparse, normalized=True)

    diff = (theirs() - ours()).abs().max().item()
    t_theirs = _median_s(theirs, repeats)
    t_ours = _median_s(ours, repeats)
    t_ours_m = _median_s(lambda: ours(False), repeats)
    print(f"propagation, 24 steps, {W}x{H}, {norm_type} (max |ours - authors| {diff:.2e} m):")
    print("  " + _fmt("authors' Affinity_Propagate         ", t_theirs))
    print("  " + _fmt("ours (their H0 re-imposition)       ", t_ours, t_theirs))
    print("  " + _fmt("ours (re-imposing the measurements) ", t_ours_m, t_theirs))


def bench_model(authors_net: nn.Module, ours_net: nn.Module, rgbd: torch.Tensor, rgb, sparse, repeats: int) -> None:
    """Whole model per frame at 228×304: theirs (eval, no_grad) vs ours (inference_mode; channels_last too)."""

    def theirs():
        with torch.no_grad():
            return authors_net(rgbd[None])

    def ours():
        with torch.inference_mode():
            return ours_net(rgb, sparse)["pred"]

    diff = (theirs().clamp_min(0) - ours()).abs().max().item()
    t_theirs = _median_s(theirs, repeats)
    t_ours = _median_s(ours, repeats)
    ours_net.to(memory_format=torch.channels_last)
    t_cl = _median_s(ours, repeats)
    ours_net.to(memory_format=torch.contiguous_format)
    print(f"whole model per frame, 304x228 (max |ours - authors| {diff:.2e} m):")
    print("  " + _fmt("authors' model (eval, no_grad)      ", t_theirs))
    print("  " + _fmt("ours (inference_mode)               ", t_ours, t_theirs))
    print("  " + _fmt("ours, channels_last                 ", t_cl, t_theirs))


# --------------------------------------------------------------------------------------------------------------


def _sync_median_ms(fn, device: torch.device, repeats: int = 10, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples)) * 1e3


def gpu_check(device: torch.device, src: Path | None) -> list[dict[str, object]] | None:
    """`benchmarks/gpu_check` part 1: the authors' 24-step propagation (their CUDA code, unpatched but for NumPy)
    against ours on `device` at 1216×352, both normalizations, and the whole model at 228×304 (seeded random
    weights, their H0 re-imposition); one row each: max |Δ| (m) and synchronized median times.  None without
    `src` (the authors' sources)."""
    if src is None:
        return None
    import importlib.util

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="cspn_gpu_check_") as tmp:
        code = extract_sources(Path(src).resolve(), Path(tmp))
        patch_sources(code, keep_cuda=device.type == "cuda")
        sys.path.insert(0, str(code / "models"))
        try:
            spec = importlib.util.spec_from_file_location("_authors_cspn", code / "models" / "cspn.py")
            theirs_mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(theirs_mod)  # type: ignore[union-attr]
            H, W = 352, 1216
            gen = torch.Generator().manual_seed(3)
            guidance = torch.randn(1, 8, H, W, generator=gen).to(device)
            blur = (torch.rand(1, 1, H, W, generator=gen) * 10).to(device)
            sparse = ((torch.rand(1, 1, H, W, generator=gen) < 0.05) * torch.rand(1, 1, H, W, generator=gen) * 10).to(
                device
            )
            for norm in ("8sum_abs", "8sum"):
                prop = theirs_mod.Affinity_Propagate(24, 3, norm_type=norm)

                def theirs(prop=prop):
                    with torch.no_grad():
                        return prop(guidance, blur, sparse)

                def ours(norm=norm):
                    with torch.inference_mode():
                        aff = normalize_affinity(authors_to_gather(guidance), norm)
                        aff.mul_(sparse <= 0)
                        return cspn_propagate(blur, aff, iterations=24, normalized=True)

                rows.append(
                    {
                        "check": f"cspn-nyu propagation 24 steps {W}x{H} {norm} ({device.type})",
                        "max_abs_diff_m": (theirs() - ours()).abs().max().item(),
                        "ours_ms": _sync_median_ms(ours, device),
                        "authors_ms": _sync_median_ms(theirs, device),
                    }
                )
            spec = importlib.util.spec_from_file_location(
                "_authors_cspn_nyu", code / "models" / "torch_resnet_cspn_nyu.py"
            )
            model_mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(model_mod)  # type: ignore[union-attr]
            torch.manual_seed(0)
            authors_net = model_mod.resnet50(cspn_config={"step": 24, "norm_type": "8sum"}).to(device).eval()
            rgb = (torch.rand(1, 3, 228, 304, generator=gen) * 255).round().to(device)
            sp = (torch.rand(1, 1, 228, 304, generator=gen) < 0.01) * torch.rand(1, 1, 228, 304, generator=gen) * 5
            sp = sp.to(device)
            ours_net = CSPNNYUNet(CSPNNYUConfig(input_scaling="none", authors_reimpose=True)).to(device)
            x = torch.cat([ours_net.encode_rgb(rgb), sp], dim=1)
            with torch.no_grad():  # their output is linear in the depth head: scale it to within +-10 m
                authors_net.gud_up_proj_layer5.conv1.weight.mul_(10.0 / authors_net(x).abs().max())
            state = {ARCHITECTURE.authors_key(k): v for k, v in authors_net.state_dict().items()}
            ours_net.load_state_dict({k: v for k, v in state.items() if k is not None})

            def theirs_model():
                with torch.no_grad():
                    return authors_net(x)

            def ours_model():
                with torch.inference_mode():
                    return ours_net(rgb, sp)["pred"]

            rows.append(
                {
                    "check": f"cspn-nyu whole model 304x228 ({device.type}, fp32)",
                    "max_abs_diff_m": (theirs_model().clamp_min(0) - ours_model()).abs().max().item(),
                    "ours_ms": _sync_median_ms(ours_model, device),
                    "authors_ms": _sync_median_ms(theirs_model, device),
                }
            )
        finally:
            sys.path.remove(str(code / "models"))
    return rows


def authors_manifest(net: nn.Module) -> dict[str, list[int]]:
    """{authors' key ("module." stripped): shape} of a model that has run once (as their saved checkpoints)."""
    return {k: list(v.shape) for k, v in net.state_dict().items()}


def manifest_json(manifest: dict[str, list[int]]) -> str:
    """The committed manifest layout: one {"name": shape} entry per line."""
    return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in manifest.items()) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cspn-src", type=Path, required=True, help="the authors' sources or bare git dir")
    ap.add_argument("--tum", type=Path, default=TUM, help="folder of TUM_color.png / TUM_depth.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-sample", type=int, default=500, help="sparse samples (their eval script: 500)")
    ap.add_argument("--bench", action="store_true", help="also time propagation and whole model")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier when shared)")
    ap.add_argument("--write-authors-manifest", action="store_true", help="write manifests/cspn_nyu_authors.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    load = os.getloadavg()
    print(
        f"CPU count {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {load[0]:.2f} "
        f"{load[1]:.2f} {load[2]:.2f}, torch {torch.__version__}"
    )
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="cspn_upstream_") as tmp:
        tmp_path = Path(tmp)
        code = extract_sources(args.cspn_src.resolve(), tmp_path)
        patch_sources(code)
        stand_ins = tmp_path / "stand_ins"
        stand_ins.mkdir()
        install_stand_ins(stand_ins)
        os.environ.setdefault("MPLBACKEND", "Agg")
        cwd = os.getcwd()
        os.chdir(code)  # their modules print and may write relative to the working directory
        try:
            sample = prepare_frame(code, args.seed, args.n_sample, args.tum.resolve())
        finally:
            os.chdir(cwd)
        rgbd = sample["rgbd"]
        rgb = (sample["raw_rgb"] * 255).round()[None]  # the uint8 crop their loader normalizes
        sparse = rgbd[3:4][None].clone()
        print(f"frame: 228x304 crop of the TUM frame, {int((sparse > 0).sum())} sparse samples (seed {args.seed})")

        for label, norm in VARIANTS:
            authors_net = build_authors(code, norm, args.seed, rgbd)
            with torch.no_grad():
                theirs = authors_net(rgbd[None])
            if args.write_authors_manifest and label == "non-pos":
                path = MANIFESTS / "cspn_nyu_authors.json"
                path.write_text(manifest_json(authors_manifest(authors_net)))
                print(f"wrote {path}")
            ckpt = tmp_path / f"best_model_{label}.pth"
            save_authors_checkpoint(authors_net, ckpt)

            base = dict(normalization=norm, input_scaling="none")
            ours_net = import_with_cli("cspn-nyu", ckpt, {**base, "authors_reimpose": True})
            with torch.inference_mode():
                ours = ours_net(rgb, sparse)["pred"]
                raw = ours_net.run_network(ours_net.encode_rgb(rgb), sparse)
            correct_net = CSPNNYUNet(CSPNNYUConfig(**base))
            correct_net.load_state_dict(ours_net.state_dict())
            with torch.inference_mode():
                correct = correct_net(rgb, sparse)["pred"]
            plain = CSPNNYUNet(CSPNNYUConfig(**base, authors_reimpose=True))
            plain.load_state_dict(ours_net.state_dict())
            with torch.enable_grad():  # the plain path: no BatchNorm folding, no sub-pixel convolutions
                d_plain = (plain.run_network(plain.encode_rgb(rgb), sparse).detach() - theirs).abs().max().item()
            d_raw = (raw - theirs).abs().max().item()
            d_pred = (ours - theirs.clamp_min(0)).abs().max().item()
            d_correct = (correct - theirs.clamp_min(0)).abs()
            at_sparse = d_correct[sparse > 0].max().item()
            elsewhere = d_correct[sparse <= 0].max().item()
            worst = max(worst, d_raw, d_pred)
            print(
                f"{label:7s} ({norm:8s}): |authors| <= {theirs.abs().max().item():.3f} m; max |ours - authors| "
                f"{d_raw:.2e} m (network output), {d_pred:.2e} m (pred, >= 0), {d_plain:.2e} m (our plain path); "
                f"with the measurements re-imposed "
                f"(our default): {at_sparse:.3f} m at the sparse pixels, {elsewhere:.3f} m elsewhere"
            )
            if args.bench:
                bench_propagation(code, norm, args.repeats)
                bench_model(authors_net, ours_net, rgbd, rgb, sparse, args.repeats)
            del authors_net, ours_net, correct_net, plain
        load = os.getloadavg()
        print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ok = worst <= 1e-3
    print(f"{'PASS' if ok else 'FAIL'}: max |Δdepth| {worst:.2e} m (target <= 1e-3 m, float32, CPU)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
