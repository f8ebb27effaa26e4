"""Device selection: `resolve_device("auto" | "cpu" | "cuda" | "cuda:N") -> torch.device`; `onednn_ops()`, torch's
oneDNN convolutions with prepacked weights where this build has them."""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

from .lazy import lazy_module

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_module("torch", globals())

__all__ = ["onednn_ops", "resolve_device"]

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")
_ONEDNN_OPS = ("_convolution_pointwise", "_convolution_transpose_pointwise", "_reorder_convolution_weight",
               "_reorder_convolution_transpose_weight")  # fmt: skip


def onednn_ops() -> Any:
    """`torch.ops.mkldnn` when it has the fused convolutions with prepacked weights (CPU inference; what
    torch.compile's CPU backend emits), else None."""
    try:
        ops = torch.ops.mkldnn
        return ops if torch.backends.mkldnn.is_available() and all(hasattr(ops, n) for n in _ONEDNN_OPS) else None
    except (AttributeError, RuntimeError):
        return None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve a device request.

    Args:
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N" (or a torch.device).

    Returns:
        The torch.device to use.  A CUDA request on a machine without CUDA (or with fewer devices than N)
        falls back to the CPU with a `RuntimeWarning`, it does not fail.

    Raises:
        ValueError: an unrecognised device string.
    """
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = _CUDA_RE.match(name)
    if m is None:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    index = int(m.group(1)) if m.group(1) is not None else None
    if not torch.cuda.is_available():
        warnings.warn(
            f"device {name!r} requested but CUDA is not available; using the CPU", RuntimeWarning, stacklevel=2
        )
        return torch.device("cpu")
    if index is not None and index >= torch.cuda.device_count():
        warnings.warn(
            f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s); using the CPU",
            RuntimeWarning,
            stacklevel=2,
        )
        return torch.device("cpu")
    return torch.device("cuda", index) if index is not None else torch.device("cuda")
