"""`depth-completion train`: config, LR schedules, overfitting one frame, DDP equivalence, resume, NaN stop."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from depth_completion_ros.cli import main
from depth_completion_ros.core.errors import DataError
from depth_completion_ros.tools import train as train_mod
from depth_completion_ros.tools.train import load_config, lr_factor, run_training

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, *extra: str) -> dict:
    base = [
        f"train.out_dir={tmp_path / 'run'}",
        "train.progress=false",
        "train.tensorboard=false",
        "train.num_threads=1",
        "data.synthetic.width=160",
        "data.synthetic.height=48",
        "data.synthetic.length=4",
        "data.val_limit=1",
        "data.crop=null",
        "optim.batch_size=2",
        "optim.steps=6",
        "train.val_every=0",
        "train.ckpt_every=0",
        "train.log_every=1",
        "model.base_width=8",  # a small CSPNNet keeps these CPU tests in seconds
        "model.depth=3",
        "model.iterations=6",
    ]
    return load_config(None, [*base, *extra])


def _losses(path: Path) -> list[float]:
    with open(path) as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_config_file_and_overrides(tmp_path):
    cfg = load_config(REPO / "config" / "train_synthetic.yaml", ["optim.lr=0.5", "data.synthetic.kind=indoor"])
    assert cfg["optim"]["lr"] == 0.5 and cfg["data"]["synthetic"]["kind"] == "indoor"
    assert cfg["optim"]["schedule"] == "onecycle"  # from the file
    assert load_config(REPO / "config" / "train_kitti.yaml")["data"]["eval_crop"] == [352, 1216]
    with pytest.raises(DataError, match="unknown config key"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(DataError, match="key=value"):
        load_config(None, ["optim.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {nope: 1}\n")
    with pytest.raises(DataError, match="unknown config key"):
        load_config(bad)


def test_lr_schedules_match_torch():
    total = 37
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=total)
    for step in range(total):
        assert lr_factor(step, total, "onecycle") == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()
    assert lr_factor(0, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 100, "cosine") == pytest.approx(0.01)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(0, 100, "cosine", warmup=10) == pytest.approx(0.1)
    with pytest.raises(DataError, match="schedule"):
        lr_factor(0, 10, "step")


def _rmse_drop(result: dict) -> tuple[float, float]:
    vals = [v["rmse_mm"] for v in result["val"]]
    return vals[0], vals[-1]


def test_overfit_one_synthetic_frame(tmp_path):
    cfg = _cfg(
        tmp_path,
        "data.synthetic.length=1",
        "data.synthetic.val_seed=0",  # validate on the training frame itself
        "data.synthetic.width=192",
        "data.synthetic.height=64",
        "data.hflip=0",
        "data.jitter=0",
        "optim.batch_size=1",
        "optim.steps=150",
        "optim.lr=0.003",
        "optim.schedule=onecycle",
        "loss.confidence=0",
        "train.val_every=150",
        "train.val_at_start=true",
    )
    res = run_training(cfg)
    start, end = _rmse_drop(res)
    assert end <= start / 5.0, (start, end)


@pytest.mark.shared_data
def test_overfit_shared_kitti_frame(tmp_path, kitti_dc_dir):
    # a 64x256 crop (bottom centre) of the shared frame in the official layout
    root = tmp_path / "kitti"
    drive, frame = "2011_09_26_drive_0001_sync", "0000000005"
    y0, x0 = 375 - 64 - 20, 500
    crop = (slice(y0, y0 + 64), slice(x0, x0 + 256))
    sources = (
        ("data_depth_velodyne/train/{d}/proj_depth/velodyne_raw", "velodyne_raw_image_02.png"),
        ("data_depth_annotated/train/{d}/proj_depth/groundtruth", "groundtruth_image_02.png"),
    )
    for sub, src in sources:
        out = root / sub.format(d=drive) / "image_02" / f"{frame}.png"
        out.parent.mkdir(parents=True)
        cv2.imwrite(str(out), cv2.imread(str(kitti_dc_dir / "depth_completion" / src), -1)[crop])
    rgb_out = root / "raw/2011_09_26" / drive / "image_02/data" / f"{frame}.png"
    rgb_out.parent.mkdir(parents=True)
    cv2.imwrite(str(rgb_out), cv2.imread(str(kitti_dc_dir / "raw/sync_rect/cam_02.png"))[crop])
    cfg = _cfg(
        tmp_path,
        "data.dataset=kitti",
        f"data.root={root}",
        "data.val_split=train",
        "data.hflip=0",
        "data.jitter=0",
        "optim.batch_size=1",
        "optim.steps=150",
        "optim.lr=0.003",
        "loss.confidence=0",
        "train.val_every=150",
        "train.val_at_start=true",
    )
    res = run_training(cfg)
    start, end = _rmse_drop(res)
    assert end <= start / 5.0, (start, end)


def _one_vs_two_processes(tmp_path: Path, *extra: str) -> tuple[list[float], list[float]]:
    sets = ["optim.batch_size=4", "optim.steps=5", "data.synthetic.length=8", "data.synthetic.width=128",
            "data.synthetic.height=48", "data.crop=null", "train.val_every=0", "train.progress=false",
            "train.tensorboard=false", "train.log_every=1", "train.num_threads=1", "train.ckpt_every=0",
            "model.base_width=8", "model.depth=3", "model.iterations=6", *extra]  # fmt: skip
    common = [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = ["-m", "depth_completion_ros.cli", "train", *common]
    one = [sys.executable, *cli, "--set", f"train.out_dir={tmp_path / 'one'}"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *cli,
           "--set", f"train.out_dir={tmp_path / 'two'}"]  # fmt: skip
    for cmd in (one, two):
        r = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    return _losses(tmp_path / "one/train.csv"), _losses(tmp_path / "two/train.csv")


def test_ddp_two_processes_match_one(tmp_path):
    """gloo, 2 processes x batch 2 vs 1 process x batch 4: same batches, global pixel pooling, averaged grads.

    BatchNorm uses running statistics here (train.freeze_bn): per-process batch statistics are the one thing
    DDP does not share on CPU (SyncBatchNorm is CUDA-only; it is used there)."""
    a, b = _one_vs_two_processes(tmp_path, "train.freeze_bn=true")
    assert len(a) == len(b) == 5
    np.testing.assert_allclose(b, a, rtol=2e-4)
    assert a[-1] < a[0]  # the model actually trains


def test_ddp_with_batchnorm_statistics_close(tmp_path):
    """Default BatchNorm (per-process statistics on CPU): same curve within 15 %."""
    a, b = _one_vs_two_processes(tmp_path)
    np.testing.assert_allclose(b, a, rtol=0.15)
    assert b[-1] < b[0] and a[-1] < a[0]


def test_resume_continues_exactly(tmp_path):
    extra = ["optim.steps=8", "train.ckpt_every=4"]
    full = run_training(_cfg(tmp_path, *extra))
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000004.safetensors"
    assert ckpt.is_file() and (tmp_path / "run/checkpoints/step_0000004.state.safetensors").is_file()
    resumed = run_training(_cfg(tmp_path, *extra, f"train.out_dir={tmp_path / 'resumed'}"), resume=ckpt)
    assert resumed["steps"] == 8 and len(resumed["history"]) == 4
    np.testing.assert_allclose(
        [h["loss"] for h in resumed["history"]], [h["loss"] for h in full["history"][4:]], rtol=1e-5
    )


def test_nan_loss_stops_and_names_the_batch(tmp_path, monkeypatch):
    real_build = train_mod.build_dataset

    class Poisoned(torch.utils.data.Dataset):
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            s = self.inner[i]
            if s["id"] == "synthetic/outdoor/2":
                s["sparse"][0, 3, 3] = float("nan")
            return s

    monkeypatch.setattr(train_mod, "build_dataset", lambda cfg, train: Poisoned(real_build(cfg, train=train)))
    with pytest.raises(
        DataError, match=r"non-finite loss at step \d+ on batch \[.*'synthetic/outdoor/2'.*not trained on"
    ):
        run_training(_cfg(tmp_path, "optim.steps=20"))
    assert not (tmp_path / "run/checkpoints/last.safetensors").exists()


def test_cli_runs_and_rejects_bad_config(tmp_path, capsys):
    out = tmp_path / "cli"
    sets = [f"train.out_dir={out}", "optim.steps=2", "train.progress=false", "data.synthetic.width=96",
            "data.synthetic.height=32", "data.synthetic.length=2", "data.crop=null", "data.val_limit=1",
            "train.val_every=2"]  # fmt: skip
    rc = main(["train", *[a for s in sets for a in ("--set", s)]])
    assert rc == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert (out / "checkpoints/last.safetensors").is_file()
    assert (out / "train.csv").is_file() and (out / "val.csv").is_file()
    assert main(["train", "--set", "optim.nope=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
