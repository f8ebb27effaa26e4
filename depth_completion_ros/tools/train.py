"""`depth-completion train`: train the learned CSPN completer (`core.model.CSPNNet`).

Config: a YAML file (see config/train_synthetic.yaml, config/train_kitti.yaml) plus `--set section.key=value`
overrides (values parsed as YAML).  AdamW, cosine or one-cycle LR (a pure function of the step, so resuming is
exact), AMP on CUDA, gradient clipping, loss from `core.losses`.  Multi-GPU / multi-process with `torchrun`
(DistributedDataParallel; NCCL on CUDA, gloo on CPU); a plain single process also works.  The batch size in
the config is the *global* batch (split over the processes).  Logs: tqdm, CSV (train.csv, val.csv) and
TensorBoard (optional).  Checkpoints: safetensors via `core.checkpoint`, optimizer state in a second safetensors
file + JSON (`--resume`), never pickle.  A non-finite loss stops training and names the batch's frame ids.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from depth_completion_ros.core.errors import CheckpointError, DataError, DepthCompletionError
from depth_completion_ros.core.files import atomic_output, atomic_write_text
from depth_completion_ros.core.losses import LossConfig, completion_loss
from depth_completion_ros.core.metrics import compute_metrics, mean_metrics

__all__ = [
    "DEFAULT_CONFIG",
    "add_arguments",
    "apply_overrides",
    "build_dataset",
    "check_config",
    "evaluate_model",
    "load_config",
    "lr_factor",
    "run",
    "run_training",
]

_LOG = logging.getLogger(__name__)

DEFAULT_CONFIG: dict[str, Any] = {
    "data": {
        "dataset": "synthetic",  # synthetic | kitti | rgbd
        "root": None,
        "raw_root": None,
        "split": "train",
        "val_split": "val",
        "limit": None,
        "val_limit": 8,
        "cameras": ["image_02", "image_03"],
        "eval_crop": None,  # [h, w] bottom-centre crop before augmentation
        "crop": None,  # [h, w] random training crop
        "hflip": 0.5,
        "jitter": 0.2,
        "num_workers": 0,
        "synthetic": {
            "length": 64,
            "seed": 0,
            "val_seed": 1_000_000,
            "kind": "outdoor",
            "width": 512,
            "height": 160,
            "lidar_beams": 64,
            "sensor": "lidar",
            "cache": True,
        },
        "rgbd": {"mode": "random", "num_points": 500, "depth_scale": 1000.0},
    },
    "model": {},
    "loss": {
        "l1": 1.0,
        "l2": 0.0,
        "init": 0.0,
        "confidence": 0.1,
        "confidence_mode": "target",
        "confidence_scale": 1.0,
    },
    "optim": {
        "lr": 1e-3,
        "weight_decay": 0.01,
        "schedule": "cosine",  # cosine | onecycle | constant
        "warmup_steps": 0,
        "steps": 1000,
        "batch_size": 4,  # global batch
        "grad_clip": 1.0,
        "amp": True,  # CUDA only
    },
    "train": {
        "out_dir": "runs/train",
        "seed": 0,
        "device": "auto",  # auto | cpu | cuda
        "log_every": 10,
        "val_every": 200,
        "val_at_start": False,
        "ckpt_every": 500,
        "max_minutes": None,
        "num_threads": 0,
        "tensorboard": True,
        "progress": True,
        "deterministic": False,
        "freeze_bn": False,  # BatchNorm layers use running statistics (eval mode) while training
        "sync_bn": True,  # SyncBatchNorm under DDP on CUDA (not available on CPU)
    },
}


# ----------------------------------------------------------------------------------------------------------- config
def _merge(base: dict, upd: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if k not in out:
            raise DataError(f"unknown config key {path}{k!r}")
        if isinstance(out[k], dict) and k != "model":
            if not isinstance(v, dict):
                raise DataError(f"config key {path}{k} must be a mapping")
            out[k] = _merge(out[k], v, f"{path}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (value parsed as YAML) to a config dict; returns a new dict."""
    cfg = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise DataError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise DataError(f"unknown config key {key!r}")
            node = node[p]
        if parts[0] != "model" and parts[-1] not in node:
            raise DataError(f"unknown config key {key!r}")
        node[parts[-1]] = yaml.safe_load(raw)
    return cfg


# (section, key) -> (kind, low, high, may be None): what check_config accepts for each numeric field.
_NUMERIC: dict[tuple[str, str], tuple[str, float, float | None, bool]] = {
    ("optim", "lr"): ("float", 0.0, None, False),  # > 0
    ("optim", "weight_decay"): ("float", 0.0, None, False),
    ("optim", "warmup_steps"): ("int", 0, None, False),
    ("optim", "steps"): ("int", 1, None, False),
    ("optim", "batch_size"): ("int", 1, None, False),
    ("optim", "grad_clip"): ("float", 0.0, None, True),
    ("train", "seed"): ("int", 0, 2**63 - 1, False),
    ("train", "log_every"): ("int", 1, None, False),
    ("train", "val_every"): ("int", 0, None, True),
    ("train", "ckpt_every"): ("int", 0, None, True),
    ("train", "max_minutes"): ("float", 0.0, None, True),
    ("train", "num_threads"): ("int", 0, 1024, False),
    ("data", "num_workers"): ("int", 0, 256, False),
    ("data", "val_limit"): ("int", 1, None, True),
    ("data", "limit"): ("int", 1, None, True),
    ("data", "hflip"): ("float", 0.0, 1.0, False),
    ("data", "jitter"): ("float", 0.0, 1.0, False),
}
_POSITIVE = {"optim.lr", "train.max_minutes"}
"""Fields that must be strictly above their lower bound."""


def _number(value: Any, kind: str) -> Any:
    """YAML 1.1 reads `1e-3` and `1e5` as strings: numbers written so are converted (integral floats to int for
    integer fields); anything else is returned as it is, for the range check to refuse."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_config(cfg: dict) -> dict:
    """Check the numeric fields of a merged config (types, finiteness, ranges); returns a copy with numbers written
    as strings (`1e-3`) converted.

    Raises:
        DataError: naming the first bad key, e.g. `optim.batch_size must be an integer >= 1, got 0`.
    """
    cfg = copy.deepcopy(cfg)
    for (section, key), (kind, low, high, nullable) in _NUMERIC.items():
        value = cfg[section][key] = _number(cfg[section][key], kind)
        name = f"{section}.{key}"
        if value is None and nullable:
            continue
        strict = name in _POSITIVE
        want = f"{'an integer' if kind == 'int' else 'a finite number'} {'>' if strict else '>='} {low}"
        want += f" and <= {high}" if high else ""
        ok_type = not isinstance(value, bool) and (
            isinstance(value, int) if kind == "int" else isinstance(value, (int, float)) and math.isfinite(value)
        )
        if not ok_type or value < low or (strict and value <= low) or (high is not None and value > high):
            raise DataError(f"{name} must be {want}{' (or null)' if nullable else ''}, got {value!r}")
    if not isinstance(cfg["train"]["out_dir"], (str, Path)) or not str(cfg["train"]["out_dir"]):
        raise DataError(f"train.out_dir must be a folder path, got {cfg['train']['out_dir']!r}")
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> dict:
    """DEFAULT_CONFIG, updated from the YAML file at `path` (if any), then from `overrides`; checked
    (`check_config`)."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DataError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise DataError(f"config {path} must be a mapping")
        cfg = _merge(cfg, data)
    return check_config(apply_overrides(cfg, overrides or []))


def _cos_interp(start: float, end: float, pct: float) -> float:
    """Cosine interpolation from `start` (pct 0) to `end` (pct 1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def lr_factor(step: int, total: int, schedule: str, warmup: int = 0) -> float:
    """LR multiplier at `step` (0-based) of `total`.

    cosine: linear warm-up over `warmup` steps, then cosine from 1 to 0.01.
    onecycle: as torch OneCycleLR (cos annealing, pct_start 0.3, div_factor 25, final_div_factor 1e4).
    constant: 1 (after warm-up).
    """
    total = max(total, 1)
    if schedule == "onecycle":  # torch.optim.lr_scheduler.OneCycleLR, evaluated in closed form
        lo, end = 1.0 / 25.0, 1.0 / 25.0 / 1e4
        up_end = 0.3 * total - 1.0
        if step <= up_end:
            pct = step / up_end if up_end > 0 else 1.0
            return _cos_interp(lo, 1.0, pct)
        pct = min(1.0, (step - up_end) / max(1e-12, total - 1.0 - up_end))
        return _cos_interp(1.0, end, pct)
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * (1 + math.cos(math.pi * frac)) / 2
    raise DataError(f"optim.schedule must be cosine, onecycle or constant, got {schedule!r}")


# ------------------------------------------------------------------------------------------------------------- data
def build_dataset(cfg: dict, *, train: bool) -> torch.utils.data.Dataset:
    """The training (train=True, augmented) or validation data set described by cfg["data"]."""
    from depth_completion_ros.data.augment import AugmentConfig

    d = cfg["data"]
    aug = None
    if train:
        aug = AugmentConfig(
            crop=tuple(d["crop"]) if d["crop"] else None,
            hflip=float(d["hflip"]),
            brightness=float(d["jitter"]),
            contrast=float(d["jitter"]),
            saturation=float(d["jitter"]),
        )
    kind = d["dataset"]
    if kind == "synthetic":
        from depth_completion_ros.data.synthetic import SyntheticDataset

        s = d["synthetic"]
        return SyntheticDataset(
            int(s["length"]) if train else int(d["val_limit"] or 8),
            seed=int(s["seed"] if train else s["val_seed"]),
            kind=s["kind"],
            width=int(s["width"]),
            height=int(s["height"]),
            lidar_beams=int(s["lidar_beams"]),
            sensor=s["sensor"],
            augment_cfg=aug,
            cache=bool(s["cache"]),
        )
    if d["root"] is None:
        raise DataError(f"data.root is required for data set {kind!r}")
    if kind == "kitti":
        from depth_completion_ros.data.kitti import KittiDepthCompletion

        return KittiDepthCompletion(
            d["root"],
            d["split"] if train else d["val_split"],
            raw_root=d["raw_root"],
            cameras=tuple(d["cameras"]),
            augment_cfg=aug,
            eval_crop=tuple(d["eval_crop"]) if d["eval_crop"] else None,
            limit=d["limit"] if train else d["val_limit"],
            seed=int(cfg["train"]["seed"]),
        )
    if kind == "rgbd":
        from depth_completion_ros.data.rgbd import RGBDDataset, SparseSamplingConfig

        r = d["rgbd"]
        return RGBDDataset(
            d["root"],
            sampling=SparseSamplingConfig(mode=r["mode"], num_points=int(r["num_points"])),
            depth_scale=float(r["depth_scale"]),
            augment_cfg=aug,
            limit=d["limit"] if train else d["val_limit"],
            seed=int(cfg["train"]["seed"]) + (0 if train else 1),
            deterministic=not train,
        )
    raise DataError(f"data.dataset must be synthetic, kitti or rgbd, got {kind!r}")


class _Batches:
    """Per-rank batches of a DistributedSampler order, resumable mid-epoch; the batch set is the same for
    any world size at equal global batch (rank r takes positions r, r + world, ... of each global batch)."""

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int) -> None:
        if global_batch % world:
            raise DataError(f"optim.batch_size {global_batch} must be divisible by the world size {world}")
        self.n, self.gb, self.rank, self.world, self.seed = n, global_batch, rank, world, seed
        self.per_epoch = max(1, n // global_batch) if n >= global_batch else 1

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if self.n < self.gb:  # tiny data sets (overfitting): repeat to fill one global batch
            order = (order * (self.gb // self.n + 1))[: self.gb]
        out = []
        for b in range(self.per_epoch):
            glob = order[b * self.gb : (b + 1) * self.gb]
            out.append(glob[self.rank :: self.world])
        return out


def _collate(items: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        if isinstance(vals[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in vals}
            if len(shapes) > 1:
                ids = [it["id"] for it in items]
                raise DataError(f"frames of different sizes in one batch {ids}: {sorted(shapes)}; set data.crop")
            out[k] = torch.stack(vals)
        else:
            out[k] = vals
    return out


# ------------------------------------------------------------------------------------------------------- checkpoints
def _save_model(path: Path, model: torch.nn.Module, model_cfg: Any, extra: dict) -> None:
    from depth_completion_ros.core.checkpoint import save_checkpoint

    with atomic_output(path) as tmp:
        save_checkpoint(tmp, model, model_cfg, extra=extra)


def _save_state(path: Path, optimizer: torch.optim.Optimizer, scaler: Any, step: int, extra: dict) -> None:
    """Optimizer state -> <path>.safetensors (tensors) + <path>.json (everything else).  No pickle."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pid}.{name}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = val
    meta = {
        "step": step,
        "param_groups": sd["param_groups"],
        "scalars": scalars,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        **extra,
    }
    st_path, js_path = _state_files(path)
    with atomic_output(st_path) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_text(js_path, json.dumps(meta, indent=1, default=float))


def _load_state(path: Path, optimizer: torch.optim.Optimizer, scaler: Any) -> dict:
    from safetensors.torch import load_file

    st_path, js_path = _state_files(path)
    if not st_path.is_file() or not js_path.is_file():
        raise CheckpointError(f"resume state not found: {st_path} / {js_path}")
    try:
        tensors = load_file(str(st_path))
        meta = json.loads(js_path.read_text())
    except Exception as exc:
        raise CheckpointError(f"cannot read resume state {path}: {exc}") from exc
    _check_state_meta(meta, js_path)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        pid, _, name = key.partition(".")
        if not (pid.isdigit() and name and int(pid) < len(params)):
            raise CheckpointError(f"{st_path}: tensor {key!r} names no parameter of the model")
        if val.ndim and tuple(val.shape) != tuple(params[int(pid)].shape):
            raise CheckpointError(
                f"{st_path}: {key} has shape {tuple(val.shape)}, the parameter {tuple(params[int(pid)].shape)}"
            )
        state.setdefault(int(pid), {})[name] = val
    for pid, sc in meta["scalars"].items():
        if not (pid.isdigit() and int(pid) < len(params) and isinstance(sc, dict)):
            raise CheckpointError(f"{js_path}: scalars entry {pid!r} names no parameter of the model")
        state.setdefault(int(pid), {}).update(sc)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"resume state {path} does not match the model/optimizer: {exc}") from exc
    return meta


def _check_state_meta(meta: Any, path: Path) -> None:
    """The JSON half of a resume state: a mapping with an integer step >= 0, param_groups and scalars."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: resume state must be a JSON object")
    missing = [k for k in ("step", "param_groups", "scalars") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: resume state lacks {', '.join(missing)}")
    step = meta["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: step must be an integer >= 0, got {step!r}")
    if not isinstance(meta["param_groups"], list) or not all(isinstance(g, dict) for g in meta["param_groups"]):
        raise CheckpointError(f"{path}: param_groups must be a list of objects")
    if not isinstance(meta["scalars"], dict):
        raise CheckpointError(f"{path}: scalars must be an object")


def _state_path_for(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.stem + ".state")


def _state_files(base: Path) -> tuple[Path, Path]:
    """<ckpt stem>.state.safetensors (optimizer tensors) and <ckpt stem>.state.json (the rest)."""
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


# -------------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module, dataset: torch.utils.data.Dataset, device: torch.device, *, limit: int | None = None
) -> dict[str, float]:
    """KITTI metrics (per image over valid gt, mean over images) of `model` on `dataset`; model in eval mode."""
    was_training = model.training
    model.eval()
    per_image = []
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        s = dataset[i]
        rgb = s["rgb"][None].to(device)
        sparse = s["sparse"][None].to(device)
        out = model(rgb, sparse, (sparse > 0).float())
        pred = out["pred"].float()[0, 0].cpu().numpy()
        gt = s["gt"][0].numpy()
        if (gt > 0).any():
            per_image.append(compute_metrics(pred, gt))
    model.train(was_training)
    if not per_image:
        raise DataError("validation set has no frame with ground truth")
    return mean_metrics(per_image).as_dict()


# ----------------------------------------------------------------------------------------------------------- training
def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def _device(cfg: dict, local_rank: int) -> torch.device:
    want = cfg["train"]["device"]
    if want == "cuda" and not torch.cuda.is_available():
        raise DataError("train.device is 'cuda' but CUDA is not available")
    if want in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if want not in ("auto", "cpu", "cuda"):
        raise DataError(f"train.device must be auto, cpu or cuda, got {want!r}")
    return torch.device("cpu")


class _Logs:
    """CSV + optional TensorBoard writers (rank 0 only)."""

    def __init__(self, out_dir: Path, tensorboard: bool, resume: bool) -> None:
        self.out_dir = out_dir
        self.files: dict[str, Any] = {}
        self.writers: dict[str, csv.DictWriter] = {}
        self.resume = resume
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except Exception as exc:  # tensorboard is optional
                _LOG.warning("TensorBoard logging off: %s", exc)

    def write(self, name: str, row: dict[str, Any]) -> None:
        if name not in self.writers:
            path = self.out_dir / f"{name}.csv"
            exists = path.is_file() and self.resume
            self.files[name] = open(path, "a" if exists else "w", newline="")  # noqa: SIM115
            self.writers[name] = csv.DictWriter(self.files[name], fieldnames=list(row), extrasaction="ignore")
            if not exists:
                self.writers[name].writeheader()
        self.writers[name].writerow(row)
        self.files[name].flush()
        if self.tb is not None:
            step = int(row.get("step", 0))
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{name}/{k}", v, step)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        if self.tb is not None:
            self.tb.close()


def run_training(cfg: dict, *, resume: str | Path | None = None) -> dict[str, Any]:
    """Train as configured; under torchrun (WORLD_SIZE > 1) with DistributedDataParallel.

    Returns (on every rank): {"steps", "history" (list of per-step dicts), "val" (list of validation dicts),
    "checkpoint" (path of the last checkpoint), "stopped" (reason)}.

    Raises:
        DataError: bad data or config, or a non-finite loss (naming the batch's frame ids).
        CheckpointError: unreadable resume files.
    """
    import torch.distributed as dist

    from depth_completion_ros.core.model import CSPNModelConfig, CSPNNet

    cfg = check_config(cfg)
    rank, world, local_rank = _dist_env()
    device = _device(cfg, local_rank)
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    t_cfg, o_cfg = cfg["train"], cfg["optim"]
    if int(t_cfg["num_threads"]) > 0:
        torch.set_num_threads(int(t_cfg["num_threads"]))
    seed = int(t_cfg["seed"])
    torch.manual_seed(seed)
    if t_cfg["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    out_dir = Path(t_cfg["out_dir"])
    is_main = rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))

    train_set = build_dataset(cfg, train=True)
    val_set = build_dataset(cfg, train=False) if is_main and t_cfg["val_every"] else None
    model_cfg = CSPNModelConfig(**cfg["model"])
    model = CSPNNet(model_cfg).to(device)
    loss_cfg = LossConfig(**cfg["loss"])
    opt = torch.optim.AdamW(model.parameters(), lr=float(o_cfg["lr"]), weight_decay=float(o_cfg["weight_decay"]))
    use_amp = bool(o_cfg["amp"]) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp) if device.type == "cuda" else None
    start_step = 0
    if resume is not None:
        from depth_completion_ros.core.checkpoint import check_state_dict, load_checkpoint

        rpath = Path(resume)
        loaded, _, ckpt_meta = load_checkpoint(rpath, map_location="cpu")
        check_state_dict(model, loaded.state_dict(), source=f"{rpath} (against model config {cfg['model']})")
        model.load_state_dict(loaded.state_dict())
        meta = _load_state(_state_path_for(rpath), opt, scaler)
        start_step = int(meta["step"])
        if "step" in ckpt_meta and ckpt_meta["step"] != start_step:
            raise CheckpointError(
                f"{rpath} is at step {ckpt_meta['step']} but its resume state at step {start_step}: not one save"
            )
        if start_step >= int(o_cfg["steps"]):
            raise DataError(
                f"{rpath} is at step {start_step}, not below optim.steps {o_cfg['steps']}: nothing to train "
                "(raise optim.steps to continue)"
            )
    freeze_bn = bool(t_cfg["freeze_bn"])
    if distributed and device.type == "cuda" and t_cfg["sync_bn"] and not freeze_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp_model: torch.nn.Module = model
    if distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    total = int(o_cfg["steps"])
    batches = _Batches(len(train_set), int(o_cfg["batch_size"]), rank, world, seed)
    logs = _Logs(out_dir, bool(t_cfg["tensorboard"]), resume is not None) if is_main else None
    history: list[dict[str, Any]] = []
    vals: list[dict[str, Any]] = []
    ckpt_dir = out_dir / "checkpoints"
    last_ckpt: Path | None = None
    best_rmse = math.inf
    t0 = time.monotonic()
    budget = float(t_cfg["max_minutes"]) * 60 if t_cfg["max_minutes"] else None
    stopped = "steps"
    bar = None
    if is_main and t_cfg["progress"]:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start_step, desc="train", dynamic_ncols=True, file=sys.stderr)

    def validate(step: int) -> None:
        nonlocal best_rmse
        if val_set is None:
            return
        m = evaluate_model(model, val_set, device)
        _train_mode(model, freeze_bn)
        row = {"step": step, **m}
        vals.append(row)
        logs.write("val", row)
        if m["rmse_mm"] < best_rmse and step > 0:
            best_rmse = m["rmse_mm"]
            _save_model(ckpt_dir / "best.safetensors", model, model_cfg, {"step": step, "val": m, "train_config": cfg})

    def checkpoint(step: int, name: str = "last") -> Path:
        path = ckpt_dir / f"{name}.safetensors"
        if not _finite(model.parameters()):  # never overwrite a good checkpoint with a diverged model
            raise DataError(f"the model's parameters are not finite at step {step}; {path.name} not written")
        if is_main:
            extra = {"step": step, "train_config": cfg}
            _save_model(path, model, model_cfg, extra)
            _save_state(_state_path_for(path), opt, scaler, step, {"config": cfg})
        if distributed:
            dist.barrier()
        return path

    try:
        if is_main and t_cfg["val_at_start"] and start_step == 0:
            validate(0)
        if distributed:
            dist.barrier()
        step = start_step
        _train_mode(ddp_model, freeze_bn)
        while step < total:
            epoch, offset = divmod(step, batches.per_epoch)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            ep_batches = batches.epoch_batches(epoch)[offset:]
            loader = torch.utils.data.DataLoader(
                train_set,
                batch_sampler=ep_batches,
                num_workers=int(cfg["data"]["num_workers"]),
                collate_fn=_collate,
                pin_memory=device.type == "cuda",
            )
            for batch in loader:
                lr = float(o_cfg["lr"]) * lr_factor(step, total, o_cfg["schedule"], int(o_cfg["warmup_steps"]))
                for g in opt.param_groups:
                    g["lr"] = lr
                rgb = batch["rgb"].to(device, non_blocking=True)
                sparse = batch["sparse"].to(device, non_blocking=True)
                gt = batch["gt"].to(device, non_blocking=True)
                with torch.autocast(device_type=device.type, enabled=use_amp):
                    out = ddp_model(rgb, sparse, (sparse > 0).to(sparse.dtype))
                out = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
                loss, parts = completion_loss(out, gt, loss_cfg)
                if distributed:  # pool over the global batch: same loss and gradient as one process
                    n_local = (gt > 0).sum().to(torch.float64)
                    n_global = n_local.clone()
                    dist.all_reduce(n_global)
                    scale = float(n_local * world / n_global.clamp_min(1.0))
                    loss = loss * scale
                    parts = {k: v * scale for k, v in parts.items()}
                _check_finite(loss, batch["id"], step, distributed, model=model, inputs=(rgb, sparse, gt), lr=lr)
                opt.zero_grad(set_to_none=True)
                if scaler is not None and use_amp:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float(o_cfg["grad_clip"] or 1e12)))
                if scaler is not None and use_amp:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                step += 1
                row = _step_row(step, loss, parts, out, gt, lr, gnorm, distributed, world)
                history.append(row)
                if is_main:
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{row['loss']:.4f}", rmse=f"{row['rmse_mm']:.0f}mm")
                    if step % int(t_cfg["log_every"]) == 0 or step == total:
                        logs.write("train", row)
                    if t_cfg["val_every"] and (step % int(t_cfg["val_every"]) == 0 or step == total):
                        validate(step)
                if t_cfg["ckpt_every"] and step % int(t_cfg["ckpt_every"]) == 0 and step < total:
                    last_ckpt = checkpoint(step, f"step_{step:07d}")
                over = budget is not None and time.monotonic() - t0 > budget
                if distributed:
                    flag = torch.tensor([1.0 if over else 0.0], device=device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    over = bool(flag.item() > 0)
                if over:
                    stopped = "time budget"
                    if is_main and t_cfg["val_every"] and step % int(t_cfg["val_every"]):
                        validate(step)
                    break
                if step >= total:
                    break
            if stopped == "time budget":
                break
        last_ckpt = checkpoint(step)
    finally:
        if bar is not None:
            bar.close()
        if logs is not None:
            logs.close()
    return {"steps": step, "history": history, "val": vals, "checkpoint": str(last_ckpt), "stopped": stopped}


def _train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    """model.train(), with BatchNorm layers kept in eval mode (running statistics) when `freeze_bn`."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def _finite(tensors: Any) -> bool:
    return all(bool(torch.isfinite(t.detach()).all()) for t in tensors)


def _check_finite(
    loss: torch.Tensor,
    ids: list[str],
    step: int,
    distributed: bool,
    *,
    model: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    lr: float,
) -> None:
    """Stop (DataError) if the loss is NaN/inf on any rank; never trains on it.  The message names the cause:
    the model's parameters (training diverged: the learning rate, not the data), non-finite inputs (naming the
    frames), or an overflow with finite inputs and parameters."""
    bad = not bool(torch.isfinite(loss.detach()).item())
    inputs_ok = _finite(inputs) if bad else True
    if distributed:
        import torch.distributed as dist

        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (bad, list(ids), inputs_ok))
    else:
        gathered = [(bad, list(ids), inputs_ok)]
    if not any(b for b, _, _ in gathered):
        return
    where = f"non-finite loss at step {step + 1}"
    stopped = "training stopped, this batch was not trained on"
    if not _finite(model.parameters()):
        raise DataError(
            f"{where}; {stopped}: the model's parameters are no longer finite, so training diverged (optim.lr is "
            f"{lr:g} at this step; lower it or set optim.grad_clip); the data is not the cause"
        )
    bad_frames = [i for b, ids_r, ok in gathered if b and not ok for i in ids_r]
    if bad_frames:
        raise DataError(f"{where} on batch {bad_frames}; {stopped} (NaN/inf in these frames' inputs or ground truth)")
    frames = [i for b, ids_r, _ in gathered if b for i in ids_r]
    raise DataError(
        f"{where} on batch {frames}; {stopped}: inputs and parameters are finite, the model or loss overflowed "
        f"(optim.lr is {lr:g}; try a lower optim.lr, optim.amp false, or check these frames for extreme depths)"
    )


@torch.no_grad()
def _step_row(
    step: int,
    loss: torch.Tensor,
    parts: dict[str, float],
    out: dict[str, torch.Tensor],
    gt: torch.Tensor,
    lr: float,
    gnorm: float,
    distributed: bool,
    world: int,
) -> dict[str, Any]:
    """One CSV row: global loss (mean over ranks) and global training RMSE (mm) over valid gt pixels."""
    valid = gt > 0
    err2 = ((out["pred"].detach() - gt) ** 2)[valid].sum()
    stats = torch.stack([loss.detach() * 1.0, err2, valid.sum().to(err2.dtype)])
    if distributed:
        import torch.distributed as dist

        dist.all_reduce(stats)
        stats[0] /= world
    row = {
        "step": step,
        "loss": float(stats[0]),
        "rmse_mm": float(torch.sqrt(stats[1] / stats[2].clamp_min(1)) * 1000.0),
        "lr": lr,
        "grad_norm": gnorm,
    }
    row.update({f"loss_{k}": v for k, v in parts.items()})
    return row


# -------------------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the sub-command's options."""
    parser.add_argument("--config", type=Path, default=None, help="YAML config (see config/train_*.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.steps=200 --set data.root=/data/kitti (repeatable)",
    )  # fmt: skip
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint to resume (its .state.* files)")
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")


def run(args: argparse.Namespace) -> int:
    """Train; returns 0, or 2 on bad input / data (one-line message on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(cfg, sort_keys=False))
            return 0
        result = run_training(cfg, resume=args.resume)
    except (DepthCompletionError, ValueError, TypeError) as exc:
        print(f"depth-completion train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if _dist_env()[0] == 0:
        last = result["history"][-1] if result["history"] else {}
        print(
            f"trained {result['steps']} steps ({result['stopped']}); last loss {last.get('loss', float('nan')):.4f}, "
            f"train RMSE {last.get('rmse_mm', float('nan')):.0f} mm; checkpoint {result['checkpoint']}"
        )
    return 0
