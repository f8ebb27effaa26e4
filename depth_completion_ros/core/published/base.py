"""The interface every published architecture implements, and the registry of them.

Calling convention of a `PublishedNet` (all tensors on one device, batch B):

    net(rgb, sparse, K) -> {"pred": (B, 1, H, W) float32 metres (0 = no estimate),
                            "confidence": (B, 1, H, W) in [0, 1] or None}

- rgb: (B, 3, H, W) float32 RGB in [0, 255] (not normalized: each net applies its own training
  normalization inside `forward`).
- sparse: (B, 1, H, W) float32 metres along the optical axis, 0 = missing.
- K: (B, 3, 3) float32 pinhole intrinsics of *this* H x W image (pixels), or None for nets that do not use
  them (`Architecture.needs_intrinsics` False).
- Any H, W: the net pads to its stride (`Architecture.stride`) and crops its outputs back itself, and applies
  the input scale it was trained at (e.g. the NYU model's) itself, so callers never resize.

Configurations are frozen dataclasses with `from_dict(Mapping) -> config` (bounded: every field checked, so a
hostile checkpoint header cannot size memory) and `to_dict() -> dict`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "PublishedNet",
    "format_manifest",
    "get_architecture",
    "load_manifest",
    "register",
    "state_manifest",
]


class PublishedConfig(Protocol):
    """A frozen architecture configuration."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable fields."""
        ...


class PublishedNet(Protocol):
    """A network built by `Architecture.build` (an `nn.Module`)."""

    def __call__(self, rgb: Tensor, sparse: Tensor, K: Tensor | None) -> dict[str, Tensor | None]:
        """See the module docstring for shapes and units."""
        ...


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """One published architecture.

    Attributes:
        name: the `method` / `--format` name ("penet", "enet", "cspn-nyu").
        title: human-readable name with its paper.
        training_data: what the released weights were trained on ("KITTI Depth Completion", "NYU Depth v2").
        needs_intrinsics: forward needs K.
        stride: inputs are padded to a multiple of this.
        config_from_dict: bounded parser of a configuration (raises ValueError naming the field).
        default_config: the configuration of the authors' released weights.
        build: configuration -> `nn.Module` (a `PublishedNet`) with random weights, in eval mode.
        authors_key: the authors' state-dict key (after stripping DataParallel's "module.") -> ours, or None
            to drop that key (e.g. buffers the authors keep but never use).
        manifest: file name, in `core/published/manifests/`, of the committed {our key: shape} of
            `default_config` (facts about the format, checked by the tests).
        prepare: inference preparation the completer applies to a loaded model on its device (folded batch
            norms, oneDNN, Winograd: same output up to float32 rounding), in place; None when the net needs none.
    """

    name: str
    title: str
    training_data: str
    needs_intrinsics: bool
    stride: int
    config_from_dict: Callable[[Mapping[str, Any]], PublishedConfig]
    default_config: PublishedConfig
    build: Callable[[Any], nn.Module]
    authors_key: Callable[[str], str | None]
    manifest: str
    prepare: Callable[[nn.Module], nn.Module] | None = None


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add `arch` to `ARCHITECTURES` (its module calls this at import)."""
    ARCHITECTURES[arch.name] = arch
    return arch


def get_architecture(name: str) -> Architecture:
    """The registered architecture `name` (importing the architecture modules on first use).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    _load_all()
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown published model {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None


_MODULES = ("penet", "cspn_nyu")


def _load_all() -> None:
    import importlib

    for mod in _MODULES:
        importlib.import_module(f"{__package__}.{mod}")


def state_manifest(model: nn.Module) -> dict[str, list[int]]:
    """{state-dict key: shape} of `model` (the format of the committed manifests)."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def load_manifest(file_name: str) -> dict[str, list[int]]:
    """The committed manifest `core/published/manifests/<file_name>` ({key: shape})."""
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "manifests" / file_name).read_text())


def format_manifest(manifest: dict[str, list[int]]) -> str:
    """JSON text of a manifest, one sorted key a line (the committed files' format)."""
    import json

    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(manifest.items())]
    return "{\n" + ",\n".join(lines) + "\n}\n"
