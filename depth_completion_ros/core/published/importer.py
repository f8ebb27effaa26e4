"""Import the authors' checkpoints of the published models, and our safetensors checkpoints of them.

Reading the authors' files (`read_authors_checkpoint`): they are pickles (`torch.save`, zip or legacy format)
that also hold an `argparse.Namespace`, optimizer state and the authors' own classes (PENet's `best_result` is a
`Result` object).  They are read with `torch.load(pickle_module=<restricted>)`: the restricted unpickler resolves
only tensors and storages (our own checked versions of torch's rebuild functions; the storage types torch
resolves itself), `OrderedDict`, plain containers, torch dtypes / `torch.Size` and `argparse.Namespace`.  Every
other global becomes an inert placeholder class that accepts any arguments and state and does nothing: nothing
else is imported or called.  TorchScript archives (which `torch.load` would hand to `torch.jit.load`) are refused.

Importing (`import_authors_state`): the authors' keys (DataParallel's "module." stripped) are mapped through
`Architecture.authors_key` and every name and shape is checked against the model of the configuration; a
missing, unexpected or wrongly shaped key is refused with one line naming it (`CheckpointError`).

Our files (`save_published` / `load_published`): safetensors, metadata
``{"format": FORMAT_TAG, "format_version": "1", "architecture": name, "config": <JSON>, "extra": <JSON>}``.
Loading parses the configuration with the architecture's bounded `config_from_dict` and checks the tensor names
and shapes of the header against the model's, built on the meta device, before allocating anything.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import contextvars
import json
import math
import os
import pickle
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..checkpoint import FORMAT_TAG as CSPN_FORMAT_TAG
from ..checkpoint import (
    check_format,
    check_shapes,
    expected_shapes,
    extra_metadata,
    format_metadata,
    read_safetensors_header,
    unwrap_model,
    write_safetensors,
)
from ..errors import CheckpointError
from .base import Architecture, PublishedConfig, get_architecture

__all__ = [
    "FORMAT_TAG",
    "FORMAT_VERSION",
    "RESTRICTED_PICKLE",
    "Inert",
    "import_authors_state",
    "load_published",
    "read_authors_checkpoint",
    "read_published_metadata",
    "save_published",
]

FORMAT_TAG = "depth_completion_ros.published"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------------------
# The restricted unpickler
# --------------------------------------------------------------------------------------------------------------


class Inert:
    """Placeholder for a class the restricted unpickler does not allow: takes any arguments and state, does nothing.

    `source` names the global it stands for ("module.name").  Container opcodes (append, setitem) are no-ops.
    """

    source: ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        """No-op (the APPEND opcode)."""

    def extend(self, items: Any) -> None:
        """No-op (the APPENDS opcode)."""

    def __repr__(self) -> str:
        return f"<inert placeholder for {self.source}>"


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any, **__: Any) -> Tensor:
    """A tensor view of a storage (torch's `_rebuild_tensor_v2` / `_rebuild_tensor` without hooks or metadata)."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    if not isinstance(storage_offset, int) or not _int_tuple(size) or not _int_tuple(stride):
        raise pickle.UnpicklingError("tensor with a malformed offset, size or stride")
    t = torch.empty((0,), dtype=storage.dtype, device=storage._untyped_storage.device)
    return t.set_(storage._untyped_storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any, **__: Any) -> Tensor:
    """The tensor of a pickled `nn.Parameter` (we only want the values)."""
    if not isinstance(data, Tensor):
        raise pickle.UnpicklingError(f"parameter holds a {type(data).__name__}, not a tensor")
    return data


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """`copyreg._reconstructor` (protocols 0 / 1) for the allowed plain classes only."""
    if (
        base is object
        and state is None
        and isinstance(cls, type)
        and (cls is argparse.Namespace or issubclass(cls, Inert))
    ):
        return cls.__new__(cls)
    return _placeholder("copyreg", "_reconstructor")()


def _int_tuple(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(n, int) and n >= 0 for n in x)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): argparse.Namespace,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch", "Size"): torch.Size,
}
for _name, _obj in (
    ("dict", dict),
    ("list", list),
    ("tuple", tuple),
    ("set", set),
    ("frozenset", frozenset),
    ("complex", complex),
    ("slice", slice),
    ("object", object),
):
    _ALLOWED[("builtins", _name)] = _obj

_PLACEHOLDERS: dict[tuple[str, str], type[Inert]] = {}


def _placeholder(module: str, name: str) -> type[Inert]:
    key = (module, name)
    cls = _PLACEHOLDERS.get(key)
    if cls is None:
        cls = type(f"Inert[{module}.{name}]"[:200], (Inert,), {"source": f"{module}.{name}"[:200]})
        if len(_PLACEHOLDERS) < 4096:  # bounded cache
            _PLACEHOLDERS[key] = cls
    return cls


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that imports nothing: allowed globals come from a fixed table, others become `Inert` classes.

    torch subclasses it (`torch.load(pickle_module=RESTRICTED_PICKLE)`) and resolves "*Storage" names itself to
    inert dtype holders before they reach `find_class`.
    """

    def find_class(self, module: str, name: str) -> Any:
        """The allowed object for `module.name`, else an inert placeholder class (nothing is imported)."""
        # Python 2 names, as pickle's own fix_imports maps them (a table lookup, no import).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):  # torch.float32, ...
            return getattr(torch, name)
        return _placeholder(module, name)

    @property
    def persistent_load(self) -> Any:
        return pickle.Unpickler.persistent_load.__get__(self)  # type: ignore[attr-defined]

    @persistent_load.setter
    def persistent_load(self, fn: Any) -> None:
        """torch sets its storage loader here: wrap it so that no storage larger than the file is allocated."""
        limit = _STORAGE_BYTES_LIMIT.get()

        def checked(saved_id: Any) -> Any:
            # torch's ids: ("storage", storage_type, key, location, numel[, view_metadata]) (zip and legacy)
            if isinstance(saved_id, tuple) and len(saved_id) >= 5 and saved_id[0] in ("storage", b"storage"):
                numel = saved_id[4]
                itemsize = getattr(getattr(saved_id[1], "dtype", None), "itemsize", 16)
                if not isinstance(numel, int) or numel < 0 or numel * itemsize > limit:
                    raise pickle.UnpicklingError(f"a storage of {numel!r} elements does not fit in the file")
            return fn(saved_id)

        pickle.Unpickler.persistent_load.__set__(self, checked)  # type: ignore[attr-defined]


_STORAGE_BYTES_LIMIT: contextvars.ContextVar[float] = contextvars.ContextVar("storage_bytes_limit", default=math.inf)
"""Largest storage (bytes) the restricted unpickler lets torch allocate: the checkpoint's file size while reading."""


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


class _RestrictedPickleModule:
    """The `pickle_module` handed to `torch.load`: `Unpickler` and `load` restricted, nothing else."""

    __name__ = "depth_completion_ros.restricted_pickle"
    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError
    load = staticmethod(_restricted_load)


RESTRICTED_PICKLE = _RestrictedPickleModule()
"""Pass as `torch.load(..., pickle_module=RESTRICTED_PICKLE, weights_only=False)`."""


def read_authors_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The state dict of an authors' `.pth` / `.pth.tar` checkpoint, read without running any code.

    Accepts `torch.save` files (zip and legacy formats) holding a state dict, or a dict with it under "model" or
    "state_dict" (PENet: {"model", "epoch", "args", "best_result", "optimizer"}).  DataParallel's "module."
    prefixes are stripped.

    Returns:
        {key: CPU tensor}, keys as the authors' model names them (without "module.").

    Raises:
        CheckpointError: missing / unreadable / TorchScript file, no state dict in it, non-tensor entries.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    if tarfile.is_tarfile(p):
        raise CheckpointError(f"{p}: the pre-0.4 torch tar format is not supported (re-save it with torch.save)")
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (OSError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"{p}: unreadable zip archive ({exc})") from exc
        if any(n.endswith(("constants.pkl", "/code/")) or "/code/" in n for n in names):
            raise CheckpointError(f"{p}: a TorchScript archive, not a checkpoint (refused: loading it runs code)")
    token = _STORAGE_BYTES_LIMIT.set(p.stat().st_size)
    try:
        obj = torch.load(str(p), map_location="cpu", pickle_module=RESTRICTED_PICKLE, weights_only=False, mmap=False)
    except Exception as exc:  # corrupt / foreign files raise many types: RuntimeError, UnpicklingError, EOFError ...
        raise CheckpointError(f"{p}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from exc
    finally:
        _STORAGE_BYTES_LIMIT.reset(token)
    state: Any = obj
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj:
                state = obj[key]
                break
    if isinstance(state, Inert):
        raise CheckpointError(f"{p}: holds a pickled {state.source} object, not a state dict (refused)")
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{p}: no state dict found (got {type(state).__name__})")
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{p}: state dict key {k!r} is not a string")
        if not isinstance(v, Tensor):
            raise CheckpointError(f"{p}: state dict entry {k!r} is a {type(v).__name__}, not a tensor")
        name = k.removeprefix("module.")
        if name in out:
            raise CheckpointError(f"{p}: key {name!r} appears twice (with and without 'module.')")
        out[name] = v.detach()
    return out


def import_authors_state(
    arch: Architecture,
    state: Mapping[str, Tensor],
    config: PublishedConfig | None = None,
    *,
    source: str = "checkpoint",
) -> tuple[nn.Module, PublishedConfig]:
    """Our model of `config` (default: the released weights') loaded with the authors' `state`.

    Args:
        arch: the architecture.
        state: the authors' state dict ("module." already stripped, e.g. by `read_authors_checkpoint`).
        config: our configuration of the model; default `arch.default_config`.
        source: name of the file in error messages.

    Returns:
        (model on the CPU in eval mode, config).

    Raises:
        CheckpointError: one line naming a missing, unexpected or wrongly shaped key (or two authors' keys mapped
            onto one of ours).
    """
    config = arch.default_config if config is None else config
    mapped: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        ours = arch.authors_key(name)
        if ours is None:
            continue
        if ours in mapped:
            raise CheckpointError(f"{source}: keys {origin[ours]!r} and {name!r} both map to {ours!r}")
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{source}: entry {name!r} is a {type(value).__name__}, not a tensor")
        mapped[ours] = value
        origin[ours] = name
    expected = expected_shapes(lambda: arch.build(config))
    got = {k: tuple(v.shape) for k, v in mapped.items()}
    check_shapes(expected, got, source=f"{source} ({arch.name}, our names)")
    model = arch.build(config)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.to(dtypes[k]) for k, v in mapped.items()}, strict=True)
    return model.eval(), config


# --------------------------------------------------------------------------------------------------------------
# Our safetensors checkpoints of published models
# --------------------------------------------------------------------------------------------------------------


def save_published(
    path: str | os.PathLike[str],
    arch: Architecture,
    model: nn.Module,
    config: PublishedConfig,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write `model` (of `arch`, `config`) as safetensors with the architecture and configuration in the metadata.

    Atomic (temporary file in the same folder, then `os.replace`).

    Raises:
        CheckpointError: `extra` not JSON-serializable.
        OSError: the write fails (the previous file is kept).
    """
    metadata = format_metadata(FORMAT_TAG, FORMAT_VERSION, config.to_dict(), extra, architecture=arch.name)
    write_safetensors(path, unwrap_model(model).state_dict(), metadata)


def read_published_metadata(
    path: str | os.PathLike[str],
) -> tuple[Architecture, PublishedConfig, dict[str, Any], dict[str, tuple[int, ...]]]:
    """Read and check the header of a published-model checkpoint (no tensor data).

    Returns:
        (architecture, config, metadata = extra + "format" / "format_version" / "architecture", {name: shape}).

    Raises:
        CheckpointError: missing / unreadable / foreign file, unknown architecture, bad configuration.
    """
    p = Path(path)
    meta, shapes = read_safetensors_header(p)
    if meta.get("format") == CSPN_FORMAT_TAG:
        raise CheckpointError(
            f"{p}: not a {FORMAT_TAG} checkpoint (format tag {CSPN_FORMAT_TAG!r}) (a learned 'cspn' checkpoint: "
            "use method cspn)"
        )
    version = check_format(p, meta, FORMAT_TAG, FORMAT_VERSION)
    try:
        arch = get_architecture(str(meta.get("architecture")))
    except ValueError as exc:
        raise CheckpointError(f"{p}: {exc}") from None
    try:
        config = arch.config_from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{p}: bad or missing {arch.name} configuration in the metadata ({exc})") from None
    metadata = extra_metadata(p, meta, format=FORMAT_TAG, format_version=version, architecture=arch.name)
    return arch, config, metadata, shapes


def load_published(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, Architecture, PublishedConfig, dict[str, Any]]:
    """Load a checkpoint written by `save_published`.

    The names and shapes in the header are checked against the model of the stored configuration (built on the
    meta device) before any tensor or model memory is allocated.

    Returns:
        (model in eval mode on `map_location`, architecture, config, metadata).

    Raises:
        CheckpointError: unreadable / truncated / foreign file, or names and shapes that do not match the model.
    """
    from safetensors.torch import load_file

    p = Path(path)
    arch, config, metadata, shapes = read_published_metadata(p)
    check_shapes(expected_shapes(lambda: arch.build(config)), shapes, source=f"{p} ({arch.name})")
    try:
        state = load_file(str(p), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{p}: cannot read tensors ({exc})") from exc
    model = arch.build(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # dtype / shape problems the header check cannot see
        raise CheckpointError(f"{p}: {str(exc).splitlines()[0]}") from None
    return model.to(map_location).eval(), arch, config, metadata
