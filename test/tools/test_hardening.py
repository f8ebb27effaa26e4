"""Regression tests of issue 12 for the command line and the core API (classes 4, 8 and 9).

4: outputs are never lost or written wrong (formats that cannot hold uint16 depth refused; every write atomic).
8: bad input ends as one line on stderr and exit 2, never a traceback, never a false success.
9: decompression bombs are refused from the header before anything is decoded.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_completion_ros.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY_TRAIN = [
    "data.synthetic.length=2",
    "data.synthetic.width=64",
    "data.synthetic.height=32",
    "data.crop=null",
    "train.tensorboard=false",
    "train.progress=false",
    "train.val_every=0",
    "optim.batch_size=2",
]


def _cli(capsys, *argv: str) -> tuple[int, str]:
    """Run `depth-completion argv` in-process: (exit code, stderr).  argparse errors exit through SystemExit."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = int(exc.code or 0)
    return rc, capsys.readouterr().err


def _one_line_exit_2(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "error" in last, err
    for n in needles:
        assert n in last, err


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    rgb, sparse = tmp_path / "rgb.png", tmp_path / "sparse.png"
    cv2.imwrite(str(rgb), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    sp = np.zeros((40, 56), np.uint16)
    sp[1::4, ::3] = 2560
    cv2.imwrite(str(sparse), sp)
    return rgb, sparse


def _complete(tmp_path: Path, out: str | Path, *extra: str) -> list[str]:
    rgb, sparse = _inputs(tmp_path)
    return ["complete", "--rgb", str(rgb), "--sparse", str(sparse), "--out-depth", str(out), *extra]


# ------------------------------------------------------------------------------------ 4. files lost or written wrong
@pytest.mark.parametrize("name", ["x.jpg", "x.jpeg", "x.webp", "x.bmp"])
def test_complete_refuses_formats_that_cannot_hold_uint16_depth(tmp_path, capsys, name):
    rc, err = _cli(capsys, *_complete(tmp_path, tmp_path / name))
    _one_line_exit_2(rc, err, name)
    assert not (tmp_path / name).exists()


def test_complete_refuses_a_lossy_confidence(tmp_path, capsys):
    rc, err = _cli(capsys, *_complete(tmp_path, tmp_path / "d.png", "--out-confidence", tmp_path / "c.jpg"))
    _one_line_exit_2(rc, err, "c.jpg")
    assert not (tmp_path / "d.png").exists()  # checked before any work or write


def _no_core_dump() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


def test_complete_disk_full_keeps_the_previous_output(tmp_path):
    """A write that fails half-way (file size limit, as a full disk) leaves the previous file intact."""
    out = tmp_path / "dense.png"
    out.write_bytes(b"previous result")
    argv = [sys.executable, "-c", "import sys; from depth_completion_ros.cli import main; sys.exit(main())"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [*argv, *_complete(tmp_path, out)], env=env, capture_output=True, text=True, preexec_fn=_no_core_dump,
        timeout=300, check=False,
    )  # fmt: skip
    _one_line_exit_2(proc.returncode, proc.stderr)
    assert out.read_bytes() == b"previous result"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _fake_drive(root: Path) -> Path:
    """The tiny raw drive of test_kitti_to_bag.py (3 frames, timestamps, calibration in `root`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_kitti_to_bag_tests", Path(__file__).with_name("test_kitti_to_bag.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._fake_drive(root)


def test_kitti_to_bag_failed_run_leaves_nothing_that_blocks_a_rerun(tmp_path, capsys):
    drive = _fake_drive(tmp_path)
    scan = drive / "velodyne_points" / "data" / "0000000002.bin"
    good = scan.read_bytes()
    scan.write_bytes(good[:-5])  # the third scan is truncated: the run fails after two frames were written
    bag = tmp_path / "bag"
    rc, err = _cli(capsys, "kitti-to-bag", drive, "--out", bag)
    _one_line_exit_2(rc, err, "0000000002.bin")
    assert not bag.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2011_09_26_drive_0001_sync", *_calibs()]
    scan.write_bytes(good)
    assert _cli(capsys, "kitti-to-bag", drive, "--out", bag)[0] == 0
    assert (bag / "metadata.yaml").is_file()


def _calibs() -> list[str]:
    return ["calib_cam_to_cam.txt", "calib_velo_to_cam.txt"]


def test_train_checkpoint_and_resume_state_survive_a_failed_save(tmp_path, monkeypatch):
    import safetensors.torch

    import depth_completion_ros.core.checkpoint as ckpt_mod
    from depth_completion_ros.core.model import CSPNModelConfig, CSPNNet
    from depth_completion_ros.tools import train as train_mod

    cfg = CSPNModelConfig()
    model = CSPNNet(cfg)
    opt = __import__("torch").optim.AdamW(model.parameters())
    path = tmp_path / "checkpoints" / "last.safetensors"
    train_mod._save_model(path, model, cfg, {"step": 1})
    train_mod._save_state(train_mod._state_path_for(path), opt, None, 1, {})
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    assert len(before) == 3

    def half_written(*args, **kwargs):
        target = Path(args[1] if len(args) > 1 else kwargs.get("filename", kwargs.get("path")))
        target.write_bytes(b"\x00" * 10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod, "save_file", half_written, raising=False)
    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError):
        train_mod._save_model(path, model, cfg, {"step": 2})
    with pytest.raises(OSError):
        train_mod._save_state(train_mod._state_path_for(path), opt, None, 2, {})
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before


# ------------------------------------------------------------------------------------ 8. one line and exit 2
@pytest.mark.parametrize("target", ["/dev/full", "DIR", "NOEXT", "/proc/version"])
def test_complete_bad_output_paths(tmp_path, capsys, target):
    out = {"DIR": tmp_path, "NOEXT": tmp_path / "dense"}.get(target, target)
    rc, err = _cli(capsys, *_complete(tmp_path, out))
    _one_line_exit_2(rc, err)
    assert Path("/dev/full").is_char_device()


def test_complete_output_over_an_input_is_refused(tmp_path, capsys):
    rgb, sparse = _inputs(tmp_path)
    before = sparse.read_bytes()
    rc, err = _cli(capsys, "complete", "--rgb", rgb, "--sparse", sparse, "--out-depth", sparse)
    _one_line_exit_2(rc, err, "overwrite an input")
    assert sparse.read_bytes() == before


def test_project_scan_not_a_multiple_of_16_bytes(tmp_path, capsys):
    (tmp_path / "drive").mkdir()
    drive = _fake_drive(tmp_path / "drive")
    kd = tmp_path / "kd"
    (kd / "raw").mkdir(parents=True)
    for name in _calibs():
        shutil.copy(drive.parent / name, kd / "raw" / name)
    scan = kd / "raw" / "lidar_data.bin"
    scan.write_bytes((drive / "velodyne_points" / "data" / "0000000000.bin").read_bytes()[:-5])
    rc, err = _cli(capsys, "project", "--kitti-dir", kd, "--out", tmp_path / "out")
    _one_line_exit_2(rc, err, "whole number of points")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optim.batch_size=0", "optim.batch_size"),
        ("optim.steps=-5", "optim.steps"),
        ("optim.lr=inf", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("train.log_every=0", "train.log_every"),
        ("data.num_workers=-1", "data.num_workers"),
        ("optim.grad_clip=abc", "optim.grad_clip"),
        ("train.max_minutes=-1", "train.max_minutes"),
        ("data.hflip=5", "data.hflip"),
        ("train.num_threads=-1", "train.num_threads"),
        ("optim.warmup_steps=-10", "optim.warmup_steps"),
    ],
)
def test_train_bad_config_values(tmp_path, capsys, override, needle):
    sets = [*TINY_TRAIN, f"train.out_dir={tmp_path / 'run'}", override]
    rc, err = _cli(capsys, "train", *[a for s in sets for a in ("--set", s)])
    _one_line_exit_2(rc, err, needle)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_numbers_written_as_yaml_strings_are_numbers():
    from depth_completion_ros.tools.train import load_config

    cfg = load_config(None, ["optim.lr=1e-3", "optim.steps=2e3"])
    assert cfg["optim"]["lr"] == 0.001 and cfg["optim"]["steps"] == 2000


def test_train_out_dir_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sets = [*TINY_TRAIN, f"train.out_dir={blocker / 'run'}", "optim.steps=1"]
    rc, err = _cli(capsys, "train", *[a for s in sets for a in ("--set", s)])
    _one_line_exit_2(rc, err, "Not a directory")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-step run: its last checkpoint and resume state."""
    from depth_completion_ros.tools.train import load_config, run_training

    out = tmp_path_factory.mktemp("trained")
    run_training(load_config(None, [*TINY_TRAIN, f"train.out_dir={out}", "optim.steps=2"]))
    return out / "checkpoints" / "last.safetensors"


def _resume_copy(trained: Path, tmp_path: Path, edit) -> Path:
    ck = tmp_path / "ck"
    shutil.copytree(trained.parent, ck)
    js = ck / "last.state.json"
    meta = json.loads(js.read_text())
    edit(meta)
    js.write_text(json.dumps(meta))
    return ck / "last.safetensors"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m.pop("scalars"), "lacks scalars"),
        (lambda m: m.pop("step"), "lacks step"),
        (lambda m: m.update(step="two"), "step must be an integer"),
        (lambda m: m.update(param_groups={}), "param_groups"),
        (lambda m: m.update(scalars={"999": {"step": 1}}), "names no parameter"),
    ],
)
def test_train_resume_state_with_bad_keys(trained, tmp_path, capsys, edit, needle):
    resume = _resume_copy(trained, tmp_path, edit)
    sets = [*TINY_TRAIN, f"train.out_dir={tmp_path / 'run'}", "optim.steps=4"]
    rc, err = _cli(capsys, "train", *[a for s in sets for a in ("--set", s)], "--resume", resume)
    _one_line_exit_2(rc, err, needle)


@pytest.mark.parametrize("step", [10**18, 4])
def test_train_resume_at_or_past_the_end_does_not_claim_training(trained, tmp_path, capsys, step):
    resume = _resume_copy(trained, tmp_path, lambda m: m.update(step=step))
    sets = [*TINY_TRAIN, f"train.out_dir={tmp_path / 'run'}", "optim.steps=4"]
    rc, err = _cli(capsys, "train", *[a for s in sets for a in ("--set", s)], "--resume", resume)
    _one_line_exit_2(rc, err)
    assert "trained" not in capsys.readouterr().out


def test_train_diverged_model_is_not_blamed_on_the_data(tmp_path, monkeypatch):
    """A learning rate that blows the weights up names the optimisation, not the frames."""
    import torch

    from depth_completion_ros.core.errors import DataError
    from depth_completion_ros.tools.train import load_config, run_training

    real_step = torch.optim.AdamW.step

    def poisoning_step(self, *a, **k):  # as lr=inf would: the update leaves non-finite weights
        out = real_step(self, *a, **k)
        with torch.no_grad():
            next(p for g in self.param_groups for p in g["params"]).fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    with pytest.raises(DataError) as info:
        run_training(load_config(None, [*TINY_TRAIN, f"train.out_dir={tmp_path}", "optim.steps=3"]))
    msg = str(info.value)
    assert "diverged" in msg and "optim.lr" in msg and "check these frames" not in msg
    assert not (tmp_path / "checkpoints" / "last.safetensors").exists()


def _bad_timestamps(tmp_path: Path) -> Path:
    drive = _fake_drive(tmp_path)
    (drive / "image_02" / "timestamps.txt").write_text("garbage\n2011-09-26 13:02:25.1\n2011-09-26 13:02:25.2\n")
    return drive


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("timestamps", "timestamps.txt:1"),
        ("rate_nan", "--rate-hz"),
        ("rate_inf", "--rate-hz"),
        ("rate_zero", "--rate-hz"),
        ("repeat_zero", "--repeat"),
        ("rate_tiny", "beyond ROS time"),
    ],
)
def test_kitti_to_bag_bad_inputs(tmp_path, capsys, case, needle):
    drive = _bad_timestamps(tmp_path) if case == "timestamps" else _fake_drive(tmp_path)
    extra = {
        "timestamps": [],
        "rate_nan": ["--rate-hz", "nan"],
        "rate_inf": ["--rate-hz", "inf"],
        "rate_zero": ["--rate-hz", "0"],
        "repeat_zero": ["--repeat", "0"],
        "rate_tiny": ["--rate-hz", "1e-9", "--repeat", "2"],
    }[case]
    rc, err = _cli(capsys, "kitti-to-bag", drive, "--out", tmp_path / "bag", *extra)
    _one_line_exit_2(rc, err, needle)
    assert not (tmp_path / "bag").exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--limit", "0"], "--limit"),
        (["--limit", "-3"], "--limit"),
        (["--panels", "-1"], "--panels"),
        (["--synthetic-size", "0", "40"], "--synthetic-size"),
    ],
)
def test_evaluate_bad_counts(capsys, extra, needle):
    rc, err = _cli(capsys, "evaluate", "--dataset", "synthetic", "--synthetic-size", "64", "32", *extra)
    _one_line_exit_2(rc, err, needle)


def test_evaluate_limit_is_honoured():
    from depth_completion_ros.core.errors import DataError
    from depth_completion_ros.tools.evaluate import iter_frames

    assert len(list(iter_frames("synthetic", None, limit=1, width=64, height=32))) == 1
    with pytest.raises(DataError, match="limit"):
        list(iter_frames("synthetic", None, limit=0, width=64, height=32))


def test_evaluate_summary_path_is_a_directory(tmp_path, capsys):
    (tmp_path / "summary.json").mkdir()
    args = ["evaluate", "--dataset", "synthetic", "--synthetic-size", "64", "32", "--limit", "1", "--panels", "0"]
    rc, err = _cli(capsys, *args, "--out", tmp_path)
    _one_line_exit_2(rc, err, "is a directory")


@pytest.mark.parametrize("shape", [(0, 0), (0, 7), (5, 0)])
def test_core_empty_images_raise_shape_error(shape):
    from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
    from depth_completion_ros.core.confidence import distance_confidence, edge_confidence
    from depth_completion_ros.core.errors import ShapeError

    sparse = np.zeros(shape, np.float32)
    with pytest.raises(ShapeError, match="empty"):
        DepthCompleter(CompleterConfig()).complete(np.zeros((*shape, 3), np.uint8), sparse)
    with pytest.raises(ShapeError):
        edge_confidence(sparse)
    with pytest.raises(ShapeError):
        distance_confidence(sparse > 0, 4.0)


def test_colorize_confidence_of_an_empty_image_does_not_kill_the_process():
    """OpenCV's colour map raised SIGFPE (process death) on a 0x0 image; run in a child to survive the old code."""
    code = (
        "import numpy as np; from depth_completion_ros.core.visualize import colorize_confidence as c;"
        "print(c(np.zeros((0, 0), np.float32)).shape, c(np.zeros((0, 4), np.float32)).shape)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(0, 0, 3) (0, 4, 3)"


def test_core_absurd_measurement_does_not_spread():
    """One 1e30 m point among 10 m measurements used to overflow the fill and drag the whole image off."""
    from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter

    sparse = np.zeros((40, 60), np.float32)
    sparse[::3, ::3] = 10.0
    sparse[9, 9] = 1e30
    depth, conf = DepthCompleter(CompleterConfig()).complete(np.zeros((40, 60, 3), np.uint8), sparse)
    np.testing.assert_allclose(depth, 10.0, rtol=1e-4)
    assert np.isfinite(conf).all()


# ------------------------------------------------------------------------------------ 9. decompression bombs
def test_complete_refuses_a_decompression_bomb(tmp_path, capsys):
    """64 MP of zeros in a ~64 kB PNG: refused from its header (limit core.files.MAX_IMAGE_PIXELS)."""
    _, sparse = _inputs(tmp_path)
    buf = cv2.imencode(".png", np.zeros((8000, 8000), np.uint8))[1]
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(buf.tobytes())
    rc, err = _cli(capsys, "complete", "--rgb", bomb, "--sparse", sparse, "--out-depth", tmp_path / "d.png")
    _one_line_exit_2(rc, err, "8000x8000", "exceeds the limit")


def test_evaluate_refuses_a_huge_synthetic_size(capsys):
    rc, err = _cli(capsys, "evaluate", "--dataset", "synthetic", "--synthetic-size", "40000", "30000")
    _one_line_exit_2(rc, err, "40000x30000", "exceeds the limit")


def test_synthetic_data_set_checks_its_size_when_built():
    from depth_completion_ros.core.errors import DataError, ShapeError
    from depth_completion_ros.data.synthetic import SyntheticDataset

    with pytest.raises(ShapeError, match="exceeds the limit"):
        SyntheticDataset(1, width=40000, height=30000)
    with pytest.raises(DataError, match="lidar_beams"):
        SyntheticDataset(1, width=64, height=32, lidar_beams=10**9)


# ------------------------------------------------------------------------------------ further cases (test/README.md)
def test_outputs_under_a_file_are_one_line(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    drive = _fake_drive(tmp_path)
    for argv in (
        _complete(tmp_path, blocker / "d.png"),
        ["project", "--synthetic", "--out", blocker],
        ["kitti-to-bag", drive, "--out", blocker / "bag"],
        ["evaluate", "--dataset", "synthetic", "--synthetic-size", "64", "32", "--limit", "1", "--out", blocker],
    ):
        rc, err = _cli(capsys, *argv)
        _one_line_exit_2(rc, err, "is a file, not a folder")
    assert blocker.read_text() == "x"


def test_object_calibration_refuses_a_sibling_image_header_beyond_the_limit(tmp_path):
    """The image size is read from the header (nothing decoded) and bounded like any image."""
    import zlib

    from depth_completion_ros.core.calibration import read_kitti_object_calibration
    from depth_completion_ros.core.errors import ShapeError

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    (tmp_path / "calib").mkdir()
    (tmp_path / "image_2").mkdir()
    ihdr = (30000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    (tmp_path / "image_2" / "000001.png").write_bytes(png)
    calib = tmp_path / "calib" / "000001.txt"
    calib.write_text(
        "P2: 700 0 600 45 0 700 170 0 0 0 1 0\nR0_rect: 1 0 0 0 1 0 0 0 1\nTr_velo_to_cam: 0 -1 0 0 0 0 -1 0 1 0 0 0\n"
    )
    with pytest.raises(ShapeError, match="30000x30000"):
        read_kitti_object_calibration(calib, 2)
    cv2.imwrite(str(tmp_path / "image_2" / "000001.png"), np.zeros((375, 1242, 3), np.uint8))  # P2's image size
    assert read_kitti_object_calibration(calib, 2).camera.width == 1242


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        ("2011-09-26 13:02:25.3\n2011-09-26 13:02:25.2\n2011-09-26 13:02:25.1\n", "earlier than the line before"),
        ("2011-09-26 13:02:25.12ab\n2011-09-26 13:02:25.2\n2011-09-26 13:02:25.3\n", "timestamps.txt:1"),
    ],
)
def test_kitti_to_bag_timestamps_backwards_or_malformed(tmp_path, capsys, lines, needle):
    drive = _fake_drive(tmp_path)
    (drive / "image_02" / "timestamps.txt").write_text(lines)
    rc, err = _cli(capsys, "kitti-to-bag", drive, "--out", tmp_path / "bag")
    _one_line_exit_2(rc, err, needle)


def test_kitti_to_bag_rate_so_high_that_stamps_repeat(tmp_path, capsys):
    rc, err = _cli(capsys, "kitti-to-bag", _fake_drive(tmp_path), "--out", tmp_path / "bag", "--rate-hz", "1e12")
    _one_line_exit_2(rc, err, "would repeat")


def test_train_resume_mismatched_saves_and_shapes(trained, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    sets = [*TINY_TRAIN, f"train.out_dir={tmp_path / 'run'}", "optim.steps=4"]
    resume = _resume_copy(trained, tmp_path / "a", lambda m: m.update(step=1))  # checkpoint says 2
    rc, err = _cli(capsys, "train", *[a for s in sets for a in ("--set", s)], "--resume", resume)
    _one_line_exit_2(rc, err, "not one save")
    resume = _resume_copy(trained, tmp_path / "b", lambda m: None)
    st = resume.with_name("last.state.safetensors")
    tensors = load_file(str(st))
    key = next(k for k, v in tensors.items() if v.ndim > 1)
    tensors[key] = tensors[key].flatten()[:3].clone()
    save_file(tensors, str(st))
    rc, err = _cli(capsys, "train", *[a for s in sets for a in ("--set", s)], "--resume", resume)
    _one_line_exit_2(rc, err, key)


def test_train_resume_from_another_model_config(trained, tmp_path, capsys):
    sets = [*TINY_TRAIN, f"train.out_dir={tmp_path / 'run'}", "optim.steps=4", "model={base_width: 16}"]
    rc, err = _cli(capsys, "train", *[a for s in sets for a in ("--set", s)], "--resume", trained)
    _one_line_exit_2(rc, err, "does not match the model")


def test_core_measurements_beyond_max_depth_are_missing():
    from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
    from depth_completion_ros.core.errors import DataError

    sparse = np.zeros((40, 60), np.float32)
    sparse[::3, ::3] = 1e4  # all beyond max_depth (1000 m): not a wall at 1000 m
    with pytest.raises(DataError, match="no valid measurement"):
        DepthCompleter(CompleterConfig()).complete(np.zeros((40, 60, 3), np.uint8), sparse)


def test_core_distance_confidence_nan_spacing():
    from depth_completion_ros.core.confidence import distance_confidence

    m = np.zeros((4, 4), bool)
    m[1, 1] = True
    with pytest.raises(ValueError, match="spacing"):
        distance_confidence(m, float("nan"))


def test_complete_confidence_and_depth_to_one_file(tmp_path, capsys):
    out = tmp_path / "d.png"
    rc, err = _cli(capsys, *_complete(tmp_path, out, "--out-confidence", out))
    _one_line_exit_2(rc, err, "same file")
    assert not out.exists()


@pytest.mark.parametrize("scale", ["0", "nan", "-256", "inf"])
def test_evaluate_bad_scale(tmp_path, capsys, scale):
    """Before: depth / 0 and NaN ended as a misleading "ground truth is empty"."""
    for d in ("pred", "gt"):
        (tmp_path / d).mkdir()
        cv2.imwrite(str(tmp_path / d / "a.png"), np.full((4, 5), 2560, np.uint16))
    rc, err = _cli(capsys, "evaluate", "--pred-dir", tmp_path / "pred", "--gt-dir", tmp_path / "gt", "--scale", scale)
    _one_line_exit_2(rc, err, "--scale")


def test_evaluate_prediction_that_is_a_fifo_does_not_hang(tmp_path):
    """A FIFO named like a PNG blocked the reader forever; now it is not a file.  In a child with a timeout."""
    for d in ("pred", "gt"):
        (tmp_path / d).mkdir()
    cv2.imwrite(str(tmp_path / "gt" / "a.png"), np.full((4, 5), 2560, np.uint16))
    os.mkfifo(tmp_path / "pred" / "a.png")
    argv = [sys.executable, "-c", "import sys; from depth_completion_ros.cli import main; sys.exit(main())"]
    args = ["evaluate", "--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt")]
    try:
        proc = subprocess.run(
            [*argv, *args], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("evaluate hung on a FIFO")
    _one_line_exit_2(proc.returncode, proc.stderr, "not a file")


@pytest.mark.parametrize("domain", ["abc", "999", "-1"])
def test_launch_bad_ros_domain_id(capsys, monkeypatch, domain):
    """Checked before any process starts (before: a ValueError traceback)."""
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    rc, err = _cli(capsys, "launch", "kitti")
    _one_line_exit_2(rc, err, "ROS_DOMAIN_ID")
