"""`depth-completion evaluate`: devkit-order metrics from PNG folders, file matching, panels, sparsification."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_completion_ros.cli import main
from depth_completion_ros.data.augment import Frame
from depth_completion_ros.tools.evaluate import evaluate_completer, match_prediction_files, plot_sparsification


def _png(path: Path, metres: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.rint(metres * 256).astype(np.uint16))


def _ref_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Direct reference of the devkit formulas for one image (values exactly representable in PNG units)."""
    v = gt > 0
    e = pred[v] - gt[v]
    ie = 1 / pred[v] - 1 / gt[v]
    return {
        "rmse_mm": math.sqrt(np.mean(e**2)) * 1000,
        "mae_mm": np.mean(np.abs(e)) * 1000,
        "irmse_per_km": math.sqrt(np.mean(ie**2)) * 1000,
        "imae_per_km": np.mean(np.abs(ie)) * 1000,
    }


def test_pred_dir_against_gt_dir_per_image_then_mean(tmp_path, capsys):
    # image A: 2 valid pixels, errors 0.5 m and 1 m; image B: 6 valid pixels, error 0.25 m each
    gt_a = np.array([[10.0, 0.0, 20.0]])
    pred_a = np.array([[10.5, 3.0, 19.0]])
    gt_b = np.full((2, 3), 8.0)
    pred_b = np.full((2, 3), 8.25)
    _png(tmp_path / "gt/a.png", np.pad(gt_a, ((0, 1), (0, 0))))
    _png(tmp_path / "pred/a.png", np.pad(pred_a, ((0, 1), (0, 0)), constant_values=5.0))
    _png(tmp_path / "gt/b.png", gt_b)
    _png(tmp_path / "pred/b.png", pred_b)
    out = tmp_path / "res"
    rc = main(["evaluate", "--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt"), "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    ra = _ref_metrics(pred_a, gt_a)
    rb = _ref_metrics(pred_b, gt_b)
    assert summary["frames"][0]["rmse_mm"] == pytest.approx(ra["rmse_mm"])  # sqrt((0.25 + 1) / 2) m
    assert summary["frames"][0]["rmse_mm"] == pytest.approx(math.sqrt(0.625) * 1000)
    for k in ra:
        assert summary["mean"][k] == pytest.approx((ra[k] + rb[k]) / 2)
    # pooled over all 8 pixels would differ: MAE (0.5 + 1 + 6 * 0.25) / 8 = 375 mm vs per-image mean 500 mm
    assert summary["mean"]["mae_mm"] == pytest.approx(500.0)
    assert summary["mean"]["valid_pixels"] == 8
    printed = capsys.readouterr().out
    assert "MEAN over 2 image(s)" in printed and "RMSE mm" in printed


def test_kitti_selection_names_are_matched(tmp_path):
    names = [
        "2011_09_26_drive_0002_sync_{}_0000000005_image_02.png",
        "2011_09_26_drive_0002_sync_{}_0000000010_image_02.png",
    ]
    for n in names:
        (tmp_path / "pred").mkdir(exist_ok=True)
        (tmp_path / "gt").mkdir(exist_ok=True)
        (tmp_path / "pred" / n.format("image")).touch()
        (tmp_path / "gt" / n.format("groundtruth_depth")).touch()
    (tmp_path / "pred" / "zzz_extra.png").touch()  # sorted order alone would mis-pair
    pairs = match_prediction_files(tmp_path / "pred", tmp_path / "gt")
    assert [(p.name, g.name) for p, g in pairs] == [(n.format("image"), n.format("groundtruth_depth")) for n in names]


def test_bad_inputs_exit_2(tmp_path, capsys):
    _png(tmp_path / "gt/a.png", np.ones((2, 2)))
    _png(tmp_path / "gt/b.png", np.ones((2, 2)))
    _png(tmp_path / "pred/a.png", np.ones((2, 2)))
    args = ["evaluate", "--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt")]
    assert main(args) == 2
    assert "have no prediction" in capsys.readouterr().err
    (tmp_path / "pred/b.png").write_bytes(b"garbage")
    assert main(args) == 2
    assert "corrupt or unreadable depth PNG" in capsys.readouterr().err
    _png(tmp_path / "pred/b.png", np.ones((3, 2)))
    assert main(args) == 2
    assert "ground truth b.png is 2x2" in capsys.readouterr().err
    _png(tmp_path / "pred/b.png", np.ones((2, 2)))
    _png(tmp_path / "gt/b.png", np.zeros((2, 2)))
    assert main(args) == 2
    assert "ground truth is empty" in capsys.readouterr().err


def test_completer_run_panels_and_sparsification(tmp_path, rng):
    frames = []
    for i in range(2):
        gt = rng.uniform(5, 50, (40, 100)).astype(np.float32)
        gt[:5] = 0
        sparse = np.where(rng.uniform(size=gt.shape) < 0.05, gt, 0).astype(np.float32)
        frames.append(Frame(rgb=rng.integers(0, 255, (40, 100, 3), dtype=np.uint8), sparse=sparse, gt=gt, K=np.eye(3),
                            id=f"f/{i}"))  # fmt: skip
    noise = {}

    def complete(rgb, sparse):  # prediction = gt + known error; confidence ranks the error exactly
        f = next(fr for fr in frames if fr.sparse is sparse)
        err = rng.uniform(-2, 2, f.gt.shape).astype(np.float32)
        noise[f.id] = err
        return np.maximum(f.gt + err, 0.5), np.exp(-np.abs(err))

    res = evaluate_completer(complete, frames, out_dir=tmp_path, panels=1, name="oracle")
    assert res["num_frames"] == 2
    for row, f in zip(res["frames"], frames, strict=True):
        v = f.gt > 0
        pred = np.maximum(f.gt + noise[f.id], 0.5)
        assert row["rmse_mm"] == pytest.approx(math.sqrt(np.mean((pred[v] - f.gt[v]).astype(np.float64) ** 2)) * 1000,
                                               rel=1e-5)  # fmt: skip
        assert row["ause_mm"] == pytest.approx(0.0, abs=1e-6)
    assert res["sparsification"]["rmse_ratio_top50"] < 0.75
    panel = cv2.imread(str(tmp_path / "panels" / "f__0.png"))
    assert panel is not None and panel.shape[0] > 100 and panel.shape[1] > 300
    assert not (tmp_path / "panels" / "f__1.png").exists()
    plot = plot_sparsification(tmp_path / "sp.png", {"oracle": res["sparsification"]})
    assert cv2.imread(str(plot)) is not None


def test_cli_default_completer_on_synthetic(tmp_path):
    out = tmp_path / "ev"
    rc = main(["evaluate", "--dataset", "synthetic", "--limit", "1", "--synthetic-size", "320", "96", "--out", str(out),
               "--panels", "1"])  # fmt: skip
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    m = s["methods"]["default"]["mean"]
    assert 0 < m["rmse_mm"] < 20000 and m["delta1"] > 0.5
    assert (out / "sparsification.png").is_file()
    assert len(list((out / "default" / "panels").glob("*.png"))) == 1


def test_cli_checkpoint_and_default_side_by_side(tmp_path):
    from depth_completion_ros.core import checkpoint as ckpt_mod
    from depth_completion_ros.core import model

    cfg = model.CSPNModelConfig(base_width=8, depth=2, iterations=2)
    ckpt = tmp_path / "m.safetensors"
    ckpt_mod.save_checkpoint(ckpt, model.CSPNNet(cfg), cfg, extra={"name": "tiny"})
    out = tmp_path / "ev"
    rc = main(["evaluate", "--dataset", "synthetic", "--limit", "1", "--synthetic-size", "160", "64", "--out", str(out),
               "--method", "default", "--method", "cspn", "--checkpoint", str(ckpt), "--device", "cpu"])  # fmt: skip
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["methods"]) == {"default", "cspn"}
    assert "tiny" in s["methods"]["cspn"]["model"]
    assert (
        s["methods"]["cspn"]["frames"][0]["id"]
        == s["methods"]["default"]["frames"][0]["id"]
        == "synthetic/outdoor/1000000"
    )
    assert (
        main(
            [
                "evaluate",
                "--dataset",
                "synthetic",
                "--method",
                "cspn",
                "--checkpoint",
                str(tmp_path / "nope.safetensors"),
            ]
        )
        == 2
    )
