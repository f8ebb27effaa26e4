"""3×3 convolutions with few output channels (network heads) for CPU float32 inference.

oneDNN runs a 3×3 convolution to 2 outputs (PENet's depth / confidence heads, 32 → 2 at full resolution) at about
a tenth of its usual speed.  Here it is a 1×1 convolution to the 9·O tap products (oneDNN, prepacked weights, NHWC)
followed by a numba sum of the nine shifted products per output:

    y[o, v, u] = bias[o] + Σ_{dy, dx ∈ 0..2} P[v + dy − 1, u + dx − 1, 9·o + 3·dy + dx],   P = x · W_taps

with zero padding 1 (taps outside the image are left out).  Output as NCHW planes.  Equal to a direct convolution
up to float32 rounding (summation order).  At 1216×352, 32 → 2 channels, 2 threads: 4.5 ms against 8.7 ms.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from .device import onednn_ops
from .kernel_propagation import match_torch_threads

__all__ = ["MAX_OUTPUTS", "NarrowConv3x3", "warm_up"]

MAX_OUTPUTS = 4  # more outputs: oneDNN's direct convolution is efficient enough


@numba.njit(cache=True, parallel=True, fastmath=True)
def _shifted_sum(products: np.ndarray, bias: np.ndarray, relu: bool, out: np.ndarray) -> None:
    """out[o, v, u] = relu?(bias[o] + Σ_{dy,dx} products[v+dy−1, u+dx−1, 9o+3dy+dx]); products (H, W, 9·O)."""
    n_out, H, W = out.shape
    for v in numba.prange(H):
        for o in range(n_out):
            row = out[o, v]
            row[:] = bias[o]
            for dy in range(3):
                y = v + dy - 1
                if y < 0 or y >= H:
                    continue
                src = products[y]
                k = 9 * o + 3 * dy
                if W == 1:
                    row[0] += src[0, k + 1]
                    continue
                row[0] += src[0, k + 1] + src[1, k + 2]
                for u in range(1, W - 1):
                    row[u] += src[u - 1, k] + src[u, k + 1] + src[u + 1, k + 2]
                row[W - 1] += src[W - 2, k] + src[W - 1, k + 1]
            if relu:
                for u in range(W):
                    row[u] = max(row[u], np.float32(0.0))


def warm_up() -> None:
    """Compile (or load from numba's cache) the shifted sum before the first frame."""
    match_torch_threads()  # starts numba's pool without changing torch's thread count
    _shifted_sum(np.zeros((1, 1, 9), np.float32), np.zeros(1, np.float32), False, np.zeros((1, 1, 1), np.float32))


class NarrowConv3x3:
    """A 3×3, stride-1, padding-1 convolution with bias and at most `MAX_OUTPUTS` outputs (module docstring).

    Args:
        weight: (O, C, 3, 3) float32 (batch-norm folded).
        bias: (O,) or None.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3) or not 1 <= weight.shape[0] <= MAX_OUTPUTS:
            raise ValueError(f"weight: expected (O ≤ {MAX_OUTPUTS}, C, 3, 3), got {tuple(weight.shape)}")
        n_out, n_in = weight.shape[:2]
        self.in_channels, self.out_channels = n_in, n_out
        self._bias = (torch.zeros(n_out) if bias is None else bias.detach().float().cpu()).contiguous().numpy()
        if self._bias.shape != (n_out,):
            raise ValueError(f"bias: expected ({n_out},), got {self._bias.shape}")
        # row 9·o + 3·dy + dx of the 1×1 convolution is tap (dy, dx) of output o
        taps = weight.detach().float().cpu().permute(0, 2, 3, 1).reshape(9 * n_out, n_in, 1, 1)
        self._taps = taps.contiguous(memory_format=torch.channels_last)
        self._packed: dict[tuple[int, ...], Tensor] = {}

    @classmethod
    def from_transposed(cls, weight: Tensor, bias: Tensor | None) -> NarrowConv3x3:
        """The 3×3, stride-1, padding-1 transposed convolution with weight (C, O, 3, 3): the same as a convolution
        with the kernel flipped and its channel axes swapped."""
        if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
            raise ValueError(f"weight: expected (C, O, 3, 3), got {tuple(weight.shape)}")
        return cls(weight.detach().transpose(0, 1).flip(2, 3), bias)

    @torch.no_grad()
    def __call__(self, x: Tensor, relu: bool = False) -> Tensor:
        """relu?(conv(x) + bias) for x (1, C, H, W) float32 on the CPU (NHWC memory preferred); (1, O, H, W) NCHW."""
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected (1, {self.in_channels}, H, W), got {tuple(x.shape)}")
        ops = onednn_ops()
        if ops is None:
            raise RuntimeError("NarrowConv3x3 needs torch's oneDNN convolutions (a CPU build with mkldnn)")
        key = tuple(x.shape)
        if key not in self._packed:
            self._packed[key] = ops._reorder_convolution_weight(self._taps, [0, 0], [1, 1], [1, 1], 1, list(key))
        products = ops._convolution_pointwise(x, self._packed[key], None, [0, 0], [1, 1], [1, 1], 1, "none", [], "")
        products = products.contiguous(memory_format=torch.channels_last)
        out = torch.empty(1, self.out_channels, *x.shape[2:])
        match_torch_threads()
        _shifted_sum(products[0].permute(1, 2, 0).numpy(), self._bias, relu, out[0].numpy())
        return out
