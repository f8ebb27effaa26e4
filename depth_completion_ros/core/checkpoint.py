"""Checkpoints of `CSPNNet`: safetensors with the model configuration in the metadata.  Never unpickles.

Layout: the model's `state_dict` tensors, and string metadata
``{"format": FORMAT_TAG, "format_version": "1", "config": <CSPNModelConfig JSON>, "extra": <JSON>}``.
Loading checks the tag, the version, the configuration (every field bounded, `CSPNModelConfig`), and every
tensor name and shape in the file's header against the configuration's model built on the "meta" device
(no memory), all before a tensor is read or the model allocated; any mismatch or an unreadable / truncated
file raises `CheckpointError`.
`import_torch_checkpoint` imports a `.pt` / `.pth` state dict with `torch.load(weights_only=True)` only.

The safetensors helpers here (`write_safetensors`: atomic write; `read_safetensors_header`: metadata and tensor
shapes without the data; `check_shapes`; `expected_shapes`: a model's shapes built on the meta device) are shared
with the published models' checkpoints (`core/published/importer.py`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import CheckpointError
from .files import atomic_output
from .model import CSPNModelConfig, CSPNNet

__all__ = [
    "FORMAT_TAG",
    "FORMAT_VERSION",
    "check_format",
    "check_shapes",
    "check_state_dict",
    "expected_shapes",
    "extra_metadata",
    "format_metadata",
    "import_torch_checkpoint",
    "json_default",
    "load_checkpoint",
    "read_checkpoint_metadata",
    "read_safetensors_header",
    "save_checkpoint",
    "unwrap_model",
    "write_safetensors",
]

FORMAT_TAG = "depth_completion_ros.cspn"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    config: CSPNModelConfig | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write `model`'s state dict as safetensors with `config` (default: `model.config`) in the metadata.

    Args:
        path: output file (conventionally `*.safetensors`).
        model: a `CSPNNet` (a DistributedDataParallel / compiled wrapper is unwrapped).
        config: its configuration.
        extra: JSON-serializable metadata (e.g. {"name": ..., "step": ...}); returned by `load_checkpoint`.

    Raises:
        CheckpointError: no configuration, or `extra` is not JSON-serializable.
    """
    model = unwrap_model(model)
    config = config if config is not None else getattr(model, "config", None)
    if not isinstance(config, CSPNModelConfig):
        raise CheckpointError(f"save_checkpoint needs a CSPNModelConfig, got {type(config).__name__}")
    metadata = format_metadata(FORMAT_TAG, FORMAT_VERSION, config.to_dict(), extra)
    write_safetensors(path, model.state_dict(), metadata)


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> None:
    """Write `tensors` and string `metadata` as safetensors at `path`, atomically (`core.files.atomic_output`).

    A reader never sees a half-written checkpoint and a failed write leaves the old file in place.

    Raises:
        DataError: `path` is a folder or a device.
        OSError: the folder is not writable or the disk is full.
    """
    from safetensors.torch import save_file

    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_output(path) as tmp:
        save_file(data, str(tmp), metadata=dict(metadata))


def read_safetensors_header(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """The string metadata and the {name: shape} of a safetensors file, without reading tensor data.

    Raises:
        CheckpointError: missing / unreadable file, not safetensors.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            shapes = {k: tuple(int(n) for n in f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{p}: not a readable safetensors checkpoint ({exc})") from exc
    return meta, shapes


def expected_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, tuple[int, ...]]:
    """{state-dict name: shape} of the model `build()` returns, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = build()
    return {k: tuple(v.shape) for k, v in unwrap_model(model).state_dict().items()}


def check_shapes(
    expected: Mapping[str, tuple[int, ...]],
    got: Mapping[str, tuple[int, ...]],
    *,
    source: str = "checkpoint",
    not_tensors: Sequence[str] = (),
) -> None:
    """Compare {name: shape} `got` with `expected`.

    Raises:
        CheckpointError: one line listing missing, unexpected and shape-mismatched names (and `not_tensors`).
    """
    missing = sorted(set(expected) - set(got) - set(not_tensors))
    unexpected = sorted(set(got) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(got[k])} vs model {tuple(expected[k])}"
        for k in got
        if k in expected and tuple(got[k]) != tuple(expected[k])
    )
    if missing or unexpected or mismatched or not_tensors:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if mismatched:
            parts.append(f"mismatched shapes ({len(mismatched)}): {_short(mismatched)}")
        if not_tensors:
            parts.append(f"non-tensor entries ({len(not_tensors)}): {_short(sorted(not_tensors))}")
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))


def read_checkpoint_metadata(path: str | os.PathLike[str]) -> tuple[CSPNModelConfig, dict[str, Any]]:
    """Read and check the header of a checkpoint (no tensor data is loaded).

    Returns:
        (config, metadata): metadata is the `extra` dict plus "format" and "format_version".

    Raises:
        CheckpointError: missing / unreadable file, not safetensors, wrong tag / version, bad config.
    """
    p = Path(path)
    meta, _ = read_safetensors_header(p)
    return _parse_metadata(p, meta)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[CSPNNet, CSPNModelConfig, dict[str, Any]]:
    """Load a checkpoint written by `save_checkpoint`.

    Args:
        path: the `.safetensors` file.
        map_location: device of the returned model.

    Returns:
        (model in eval mode on `map_location`, its config, metadata = `extra` + "format" / "format_version").

    Raises:
        CheckpointError: unreadable / truncated / foreign file, or names and shapes that do not match the
            model of the stored configuration (missing, unexpected and mismatched keys are listed).
    """
    from safetensors.torch import load_file

    p = Path(path)
    meta, shapes = read_safetensors_header(p)
    config, metadata = _parse_metadata(p, meta)
    check_shapes(expected_shapes(lambda: CSPNNet(config)), shapes, source=str(p))  # before allocating anything
    try:
        state = load_file(str(p), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{p}: cannot read tensors ({exc})") from exc
    model = CSPNNet(config)
    check_state_dict(model, state, source=str(p))
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), config, metadata


def check_state_dict(model: torch.nn.Module, state: Mapping[str, Tensor], *, source: str = "checkpoint") -> None:
    """Compare tensor names and shapes of `state` with `model.state_dict()`.

    Raises:
        CheckpointError: listing missing, unexpected and shape-mismatched keys (and non-tensor values).
    """
    expected = {k: tuple(v.shape) for k, v in unwrap_model(model).state_dict().items()}
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, Tensor)}
    check_shapes(expected, got, source=source, not_tensors=not_tensors)


def import_torch_checkpoint(
    path: str | os.PathLike[str], config: CSPNModelConfig, map_location: str | torch.device = "cpu"
) -> CSPNNet:
    """Import a `.pt` / `.pth` state dict (or {"state_dict" | "model": state dict}) into a `CSPNNet(config)`.

    Uses `torch.load(weights_only=True)` only: a file whose unpickling would build arbitrary objects or run
    code is refused.  A "module." prefix (DataParallel) is stripped.

    Raises:
        CheckpointError: missing / unsafe / unreadable file, or names and shapes that do not match.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for unsafe globals, RuntimeError / EOFError for corrupt files
        raise CheckpointError(f"{p}: refused or unreadable torch checkpoint (weights_only=True): {exc}") from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: expected a state dict, got {type(obj).__name__}")
    state = {str(k).removeprefix("module."): v for k, v in obj.items()}
    model = CSPNNet(config)
    check_state_dict(model, state, source=str(p))
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


def format_metadata(
    tag: str, version: int, config: Mapping[str, Any], extra: Mapping[str, Any] | None, **fields: str
) -> dict[str, str]:
    """The string metadata of a checkpoint header: format tag and version, `fields`, the config and `extra` as JSON
    (the writer's side of `check_format` / `extra_metadata`).

    Raises:
        CheckpointError: `extra` is not JSON-serializable.
    """
    try:
        extra_json = json.dumps(dict(extra or {}), default=json_default)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint extra metadata is not JSON-serializable: {exc}") from exc
    return {
        "format": tag,
        "format_version": str(version),
        **fields,
        "config": json.dumps(dict(config), sort_keys=True),
        "extra": extra_json,
    }


def check_format(p: Path, meta: Mapping[str, str], tag: str, max_version: int) -> int:
    """Check a safetensors header's "format" tag and "format_version" (1..`max_version`); returns the version.

    Raises:
        CheckpointError: another tag, or a missing / unsupported version.
    """
    found = meta.get("format")
    if found != tag:
        raise CheckpointError(f"{p}: not a {tag} checkpoint (format tag {found!r})")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"{p}: bad format_version {meta.get('format_version')!r}") from None
    if not 1 <= version <= max_version:
        raise CheckpointError(f"{p}: format_version {version} is not supported (this code reads 1..{max_version})")
    return version


def extra_metadata(p: Path, meta: Mapping[str, str], **fields: Any) -> dict[str, Any]:
    """The header's "extra" JSON as a dict, updated with `fields` (e.g. format, format_version).

    Raises:
        CheckpointError: "extra" is not JSON.
    """
    try:
        extra = json.loads(meta.get("extra", "{}"))
    except ValueError as exc:
        raise CheckpointError(f"{p}: bad extra metadata ({exc})") from None
    metadata = dict(extra) if isinstance(extra, dict) else {"extra": extra}
    metadata.update(fields)
    return metadata


def _parse_metadata(p: Path, meta: Mapping[str, str]) -> tuple[CSPNModelConfig, dict[str, Any]]:
    version = check_format(p, meta, FORMAT_TAG, FORMAT_VERSION)
    try:
        config = CSPNModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{p}: bad or missing model configuration in the metadata ({exc})") from exc
    return config, extra_metadata(p, meta, format=FORMAT_TAG, format_version=version)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DataParallel / DistributedDataParallel / `torch.compile` wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")


def json_default(obj: Any) -> Any:
    """`json.dumps(default=...)` for paths, one-element tensors and numpy scalars."""
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Tensor) and obj.numel() == 1:
        return obj.item()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")
