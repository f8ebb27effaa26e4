"""The CSPN paper's NYU Depth v2 model (Cheng, Wang, Yang, ECCV 2018), our own implementation.

Architecture (facts read from the authors' `cspn_pytorch`, code written here): a ResNet-50 encoder whose stem takes
4 channels (RGB + sparse depth), a 3×3 bottleneck convolution, four up-projection blocks that unpool ×2 (zero
insertion: each value at the top-left of its 2×2 cell) and concatenate the encoder skips (layer2, layer1 and the stem
convolution *before* its BatchNorm), then two heads on the unpooled last decoder map: the initial depth H0 (1
channel) and the raw 8-neighbour affinity (8 channels), and 24 steps of 8-neighbour CSPN (`core.propagation`).

Any size: the encoder halves with ceil (7×7/2 stem, 3×3/2 max-pool, three stride-2 stages), and each decoder stage is
cropped to the size of the encoder level it mirrors (the authors hard-code those sizes for 228×304: 15×19, 29×38,
57×76, 114×152, 228×304, which this rule reproduces), so no padding is needed (`stride` 1).

Input preprocessing (the authors' training / evaluation loader, applied inside `forward`):
  * Scale.  Their NYU loader resizes the 480×640 frames so the short side is 240 px (×0.5; training adds a random
    ×1–1.5 zoom with depth / zoom, i.e. the same focal length) and centre-crops 228×304.  The network therefore only
    saw NYU's Kinect at half resolution, focal length ≈ 518.86 / 2 = 259.4 px.  `input_scaling`:
    "auto" (default): scale = `focal_px` / fx when K is given (same apparent size as in training), else the short
    side to `short_side` (240: ×0.5 for any 640×480 camera); "focal", "short_side", or "none" (as given).  The
    network runs at the scaled size (rgb: bilinear with antialiasing, rounded to integers like the loader's uint8
    image; sparse: each measurement moved to the cell it falls in, the nearest one kept per cell), its prediction is
    resized back (bilinear) and the measurements are re-imposed at full resolution.
  * RGB.  `ToTensor` (/255), ImageNet `Normalize`, then — a quirk of their loader the released weights were trained
    with — `ToPILImage` and `ToTensor` again: ToPILImage multiplies by 255 and casts to uint8, which truncates
    towards zero and wraps modulo 256 the normalized values outside [0, 1).  The network input is therefore
    ``(trunc(255·n) mod 256) / 255`` with ``n = (x / 255 − mean) / std``; `rgb_uint8_wrap` (default True) reproduces
    it, False feeds ``n`` (for weights trained without the quirk).
  * Depth: metres (NYU's HDF5 depth), 0 = missing, passed as the 4th input channel.

CSPN (authors' `Affinity_Propagate`, mapped onto `core.propagation`'s gather convention):
    The authors' raw channel k (k = 0..7, their order top-left, top, top-right, left, right, bottom-left, bottom,
    bottom-right, which is our `NEIGHBOUR_OFFSETS` order o_k) is stored at the *sending* pixel q: pixel p receives
    ``w_k(p − o_k) · H(p − o_k)``, i.e. from its neighbour at −o_k, with the weight read at that neighbour (scatter),
    normalized at p by ``Σ_k |w_k(p − o_k)|`` (out-of-image neighbours count 0).  Since −o_k = o_(7−k), our gather
    channel j (neighbour p + o_j, weight read at p) is
        ``raw_ours[j](p) = w_(7−j)(p + o_j)``   (0 where p + o_j is outside the image),
    after which `normalize_affinity(raw_ours, "8sum" | "8sum_abs")` equals their normalization ("8sum_abs" = their
    "Fast Unpool, pos" model, "8sum" = "non-pos"), the H0 weight 1 − Σŵ included (`authors_to_gather`, tested).
    The only difference: their denominator has no floor (0/0 where all 8 are 0), ours `max(Σ|w|, 1e-6)`.

Known defect kept out (their issues #29 and #49): after every step the authors' code re-imposes the *initial depth*
H0 at the sparse pixels (``(1 − m)·H + m·H0``), not the measurement, so measurements never reach the output.  We
re-impose the measurement (the paper's formulation).  `authors_reimpose=True` reproduces their behaviour for the
equivalence check only (zeroing the affinities of the sparse pixels: H stays H0 there, exactly their result).

Inference: in eval mode without autograd the BatchNorms are folded into the convolutions (cached per weight
version) and each unpool-then-convolve is computed as four sub-pixel convolutions on the low-resolution map (a k×k
convolution after zero insertion only meets ⌈k/2⌉² or fewer non-zero inputs: 25 taps instead of 100 for 5×5),
exactly the same sums, about 4× fewer operations.  On the CPU in float32 every folded convolution runs as oneDNN
with its weight prepacked once (`PackedConv`); elsewhere `conv2d` (the 1/32-scale maps as unfold + GEMM).  With
autograd (training) the plain formulation runs.  `channels_last` parameters
(``net.to(memory_format=torch.channels_last)``) are followed by the inputs.  Measured by
`benchmarks/verify_upstream_cspn.py --bench` (1 thread, 228×304): 513–550 ms per frame against 1183–1234 ms for the
authors' model at equal output (max |Δ| ≤ 2.4e-4 m).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..device import onednn_ops
from ..errors import CalibrationError, ShapeError, check_shape
from ..propagation import MAX_ITERATIONS, NEIGHBOUR_OFFSETS, cspn_propagate, normalize_affinity
from .base import Architecture, register

__all__ = ["ARCHITECTURE", "CSPNNYUConfig", "CSPNNYUNet", "authors_key", "authors_to_gather"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NYU_NETWORK_FOCAL_PX = 518.8579 / 2
"""NYU Depth v2 Kinect fx (640×480) at the loader's ×0.5 scale: the focal length the network was trained at."""

INPUT_SCALINGS = ("auto", "focal", "short_side", "none")
NORMALIZATIONS = ("8sum", "8sum_abs")
_MAX_NETWORK_SIDE = 4096


@dataclass(frozen=True, kw_only=True)
class CSPNNYUConfig:
    """Configuration of `CSPNNYUNet` (defaults: the authors' released NYU models, "non-pos" = "8sum").

    Attributes:
        normalization: "8sum" (signed affinities, the "non-pos" model) or "8sum_abs" ("Fast Unpool, pos").
        iterations: CSPN steps (authors: 24), 0..256.
        input_scaling: "auto", "focal", "short_side" or "none" (module docstring).
        short_side: target short side, px, of "short_side" scaling (authors' loader: 240), 16..4096.
        focal_px: target focal length, px, of "focal" scaling (NYU at the loader's scale: 259.4), 16..8192.
        rgb_uint8_wrap: reproduce the loader's uint8 round trip of the normalized RGB (module docstring).
        authors_reimpose: re-impose H0 instead of the measurement at sparse pixels (the authors' defect; for the
            equivalence check only).
    """

    normalization: str = "8sum"
    iterations: int = 24
    input_scaling: str = "auto"
    short_side: int = 240
    focal_px: float = NYU_NETWORK_FOCAL_PX
    rgb_uint8_wrap: bool = True
    authors_reimpose: bool = False

    def __post_init__(self) -> None:
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("input_scaling", self.input_scaling, INPUT_SCALINGS)
        _check_int("iterations", self.iterations, 0, MAX_ITERATIONS)
        _check_int("short_side", self.short_side, 16, 4096)
        if isinstance(self.focal_px, bool) or not isinstance(self.focal_px, int | float):
            raise ValueError(f"focal_px must be a number, got {self.focal_px!r}")
        if not 16.0 <= float(self.focal_px) <= 8192.0:
            raise ValueError(f"focal_px must be in [16, 8192], got {self.focal_px!r}")
        for name in ("rgb_uint8_wrap", "authors_reimpose"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CSPNNYUConfig:
        """Parse `data` (unknown or out-of-range fields raise ValueError naming the field)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"cspn-nyu config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ValueError(f"unknown cspn-nyu config field {key!r}")
        return cls(**dict(data))


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")


# ---------------------------------------------------------------------------------------------------------------
# Building blocks


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d without the `num_batches_tracked` counter (unused with a fixed momentum, and absent from the
    PyTorch 0.4.0 checkpoints the authors released), so it is no part of our format."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.num_batches_tracked = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)  # skip BN's counter insertion


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


def _weights_key(*tensors: Tensor) -> tuple[Any, ...]:
    """Identity of the current values of `tensors` (changes on in-place updates, `load_state_dict`, `.to`)."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


def _tensors(*modules: nn.Module) -> tuple[Tensor, ...]:
    """The parameters and buffers of `modules` (not their children)."""
    return tuple(t for m in modules for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)))


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(weight, bias) of conv followed by bn in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv.weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class _Cache:
    """Derived inference weights, rebuilt when the weights they come from change (not part of the state dict)."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.value: Any = None

    def get(self, sources: tuple[Tensor, ...], build: Any) -> Any:
        key = _weights_key(*sources)
        if key != self.key:
            self.value, self.key = build(), key
        return self.value


def _fast(module: nn.Module) -> bool:
    return not module.training and not torch.is_grad_enabled()


_GEMM_MAX_POSITIONS = 128


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0) -> Tensor:
    """`F.conv2d` (square stride and padding); maps of at most 128 output positions (the 1/32-scale stages) as an
    unfold and one matrix product (k > 1): with 2048 channels MKL's GEMM takes ~0.6× oneDNN's convolution time there."""
    B, _, H, W = x.shape
    cout, _, kh, kw = weight.shape
    oh, ow = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    if oh * ow > _GEMM_MAX_POSITIONS or kh * kw == 1:
        return F.conv2d(x, weight, bias, stride, padding)
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (B, C·kh·kw, oh·ow)
    out = torch.matmul(weight.reshape(cout, -1), cols)
    if bias is not None:
        out += bias[:, None]
    return out.reshape(B, cout, oh, ow)


class PackedConv:
    """A folded (conv + BN) convolution for inference.  On the CPU in float32 it runs as oneDNN with its weight
    prepacked once per input layout: `conv2d` reorders the weights on every call (`F.conv2d`) or uses MKL's AVX2
    GEMM, measured 1.2–2.4× slower (single thread).  On the CPU only the packed weight is kept (`make` rebuilds the
    dense one for another layout); elsewhere (CUDA, float64) the folded dense weight is kept per device and dtype.

    Args:
        make: () -> (weight (O, C, kh, kw), bias (O,) or None), the folded weights.
        stride, padding: square, as in `F.conv2d`.
    """

    def __init__(self, make: Any, stride: int = 1, padding: int = 0) -> None:
        self._make, self.stride, self.padding = make, stride, padding
        self._packed: dict[tuple[bool, int], tuple[Tensor, Tensor | None]] = {}
        self._dense: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor | None]] = {}  # CUDA, float64

    def __call__(self, x: Tensor) -> Tensor:
        ops = onednn_ops()
        if ops is None or x.device.type != "cpu" or x.dtype != torch.float32:
            key = (x.device, x.dtype)
            if key not in self._dense:
                weight, bias = self._make()
                self._dense[key] = (weight.to(x.device, x.dtype), None if bias is None else bias.to(x.device, x.dtype))
            weight, bias = self._dense[key]
            return conv2d(x, weight, bias, self.stride, self.padding)
        nhwc = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = x if nhwc else x.contiguous()
        st, pad = [self.stride] * 2, [self.padding] * 2
        key = (nhwc, x.shape[1])
        if key not in self._packed:
            weight, bias = self._make()
            weight = weight.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
            packed = ops._reorder_convolution_weight(weight, pad, st, [1, 1], 1, list(x.shape))
            self._packed[key] = (packed, None if bias is None else bias.contiguous())
        packed, bias = self._packed[key]
        return ops._convolution_pointwise(x, packed, bias, pad, st, [1, 1], 1, "none", [], "")


def _conv_bn(x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, cache: _Cache, fast: bool) -> Tensor:
    if not fast:
        return bn(conv(x))
    build = lambda: PackedConv(lambda: _folded(conv, bn), conv.stride[0], conv.padding[0])  # noqa: E731
    return cache.get(_tensors(conv, bn), build)(x)


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (1×1, 3×3 with the stride, 1×1 ×4), the authors' / torchvision's layout."""

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = 4 * planes
        self.conv1, self.bn1 = _conv(cin, planes, 1), _BatchNorm(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride), _BatchNorm(planes)
        self.conv3, self.bn3 = _conv(planes, cout, 1), _BatchNorm(cout)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, 1, stride), _BatchNorm(cout))
        self._caches = [_Cache() for _ in range(4)]

    def forward(self, x: Tensor) -> Tensor:
        fast, c = _fast(self), self._caches
        out = F.relu(_conv_bn(x, self.conv1, self.bn1, c[0], fast), inplace=True)
        out = F.relu(_conv_bn(out, self.conv2, self.bn2, c[1], fast), inplace=True)
        out = _conv_bn(out, self.conv3, self.bn3, c[2], fast)
        if self.downsample is not None:
            x = _conv_bn(x, self.downsample[0], self.downsample[1], c[3], fast)  # type: ignore[arg-type]
        return F.relu(out.add_(x), inplace=True)


def unpool2(x: Tensor, size: tuple[int, int]) -> Tensor:
    """×2 zero-insertion unpooling (each value at the top-left of its 2×2 cell), cropped to `size` (h, w)."""
    B, C, h, w = x.shape
    up = x.new_zeros(B, C, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return up[:, :, : size[0], : size[1]]


def _subpixel_taps(k: int, parity: int) -> tuple[list[int], int, int]:
    """Kernel taps u (increasing) of a k×k convolution (padding k // 2) that meet non-zero inputs of a ×2
    zero-inserted map at output parity `parity`, and the (first, last) low-resolution offsets they read."""
    p = k // 2
    taps = [u for u in range(k) if (parity + u - p) % 2 == 0]
    offsets = [(parity + u - p) // 2 for u in taps]
    return taps, offsets[0], offsets[-1]


def _subpixel_kernels(weight: Tensor) -> list[tuple[Tensor, int, int]]:
    """Per output parity (a, b) in row-major order: (sub-kernel, first row offset, first column offset)."""
    k = weight.shape[-1]
    out = []
    for a in (0, 1):
        ta, ra, _ = _subpixel_taps(k, a)
        for b in (0, 1):
            tb, cb, _ = _subpixel_taps(k, b)
            out.append((weight[:, :, ta][:, :, :, tb].contiguous(), ra, cb))
    return out


def unpool_conv(
    x: Tensor, kernels: list[tuple[Tensor, int, int]], bias: Tensor | None, size: tuple[int, int]
) -> Tensor:
    """conv2d(unpool2(x, size), W, padding k // 2) from `_subpixel_kernels(W)`, computed on the low-resolution x."""
    convs = [
        (lambda xw, k=kern: conv2d(xw, k, bias), kern.shape[-2], kern.shape[-1], r0, c0) for kern, r0, c0 in kernels
    ]
    return _unpool_apply(x, convs, size)


def packed_subpixel(make: Any) -> list[tuple[PackedConv, int, int, int, int]]:
    """The sub-pixel convolutions of `_subpixel_kernels` as `PackedConv`s, for `unpool_conv_packed`.

    Args:
        make: () -> (folded k×k weight, bias or None) of the convolution after the unpooling.
    """

    def sub(i: int) -> tuple[Tensor, Tensor | None]:
        weight, bias = make()
        return _subpixel_kernels(weight)[i][0], bias

    weight, _ = make()
    return [
        (PackedConv(lambda i=i: sub(i)), kern.shape[-2], kern.shape[-1], r0, c0)
        for i, (kern, r0, c0) in enumerate(_subpixel_kernels(weight))
    ]


def unpool_conv_packed(x: Tensor, convs: list[tuple[PackedConv, int, int, int, int]], size: tuple[int, int]) -> Tensor:
    """`unpool_conv` with the prepacked convolutions of `packed_subpixel`."""
    return _unpool_apply(x, convs, size)


def _unpool_apply(x: Tensor, convs: list[tuple[Any, int, int, int, int]], size: tuple[int, int]) -> Tensor:
    """The four parity outputs of (conv, kh, kw, first row offset, first column offset), interleaved."""
    B, _, h, w = x.shape
    pad = 1  # offsets are within [-1, 1] for k <= 5
    xp = F.pad(x, (pad, pad, pad, pad))
    outs = []
    for conv, kh, kw, r0, c0 in convs:
        window = xp[:, :, r0 + pad : r0 + pad + h + kh - 1, c0 + pad : c0 + pad + w + kw - 1]
        outs.append(conv(window))
    C = outs[0].shape[1]
    y = F.pixel_shuffle(torch.stack(outs, dim=2).reshape(B, 4 * C, h, w), 2)
    return y[:, :, : size[0], : size[1]]


class UpProjection(nn.Module):
    """Unpool ×2 → (5×5 conv, BN, ReLU) [→ concat skip → 3×3 conv, BN, ReLU] → 3×3 conv, BN, plus the shortcut
    (5×5 conv, BN of the unpooled input) → ReLU.  Authors: `Gudi_UpProj_Block` / `Gudi_UpProj_Block_Cat`."""

    def __init__(self, cin: int, cout: int, skip: int) -> None:
        super().__init__()
        self.up_conv, self.up_bn = _conv(cin, cout, 5), _BatchNorm(cout)
        self.fuse_conv: nn.Conv2d | None = None
        self.fuse_bn: nn.BatchNorm2d | None = None
        if skip:
            self.fuse_conv, self.fuse_bn = _conv(cout + skip, cout, 3), _BatchNorm(cout)
        self.conv, self.bn = _conv(cout, cout, 3), _BatchNorm(cout)
        self.shortcut_conv, self.shortcut_bn = _conv(cin, cout, 5), _BatchNorm(cout)
        self._caches = [_Cache() for _ in range(3)]

    def _unpool_branches(self) -> tuple[Tensor, Tensor]:
        """The folded 5×5 convolutions of both branches as one (2·cout outputs)."""
        w1, b1 = _folded(self.up_conv, self.up_bn)
        w2, b2 = _folded(self.shortcut_conv, self.shortcut_bn)
        return torch.cat([w1, w2]), torch.cat([b1, b2])

    def forward(self, x: Tensor, size: tuple[int, int], skip: Tensor | None = None) -> Tensor:
        fast = _fast(self)
        c = self.up_conv.weight.shape[0]
        if fast:
            sources = _tensors(self.up_conv, self.up_bn, self.shortcut_conv, self.shortcut_bn)
            convs = self._caches[0].get(sources, lambda: packed_subpixel(self._unpool_branches))
            both = unpool_conv_packed(x, convs, size)
            out, short = F.relu(both[:, :c]), both[:, c:]
        else:
            up = unpool2(x, size)
            out = F.relu(self.up_bn(self.up_conv(up)))
            short = self.shortcut_bn(self.shortcut_conv(up))
        if self.fuse_conv is not None and self.fuse_bn is not None:
            if skip is None:
                raise ValueError("this up-projection needs its skip input")
            out = torch.cat([out, skip], dim=1)
            out = F.relu(_conv_bn(out, self.fuse_conv, self.fuse_bn, self._caches[1], fast), inplace=True)
        out = _conv_bn(out, self.conv, self.bn, self._caches[2], fast)
        return F.relu(out + short)


# ---------------------------------------------------------------------------------------------------------------
# The network


def authors_to_gather(raw: Tensor) -> Tensor:
    """The authors' raw affinity (B, 8, H, W) (scatter: channel k at the sending pixel, neighbour −o_k) as ours
    (gather: channel j at the receiving pixel p, neighbour p + o_j): ``out[:, j](p) = raw[:, 7 − j](p + o_j)``,
    0 where p + o_j is outside the image.  See the module docstring."""
    _, _, H, W = raw.shape
    padded = F.pad(raw, (1, 1, 1, 1))
    chans = [padded[:, 7 - j, 1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W] for j, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS)]
    return torch.stack(chans, dim=1)


def _half(n: int) -> int:
    return (n + 1) // 2


class CSPNNYUNet(nn.Module):
    """ResNet-50 UNet with up-projection and 8-neighbour CSPN; see the module docstring.

    Call: ``net(rgb, sparse, K=None) -> {"pred": (B, 1, H, W) metres >= 0, "confidence": None}`` (`base`).
    """

    def __init__(self, config: CSPNNYUConfig | None = None) -> None:
        super().__init__()
        self.config = config or CSPNNYUConfig()
        self.stem_conv, self.stem_bn = nn.Conv2d(4, 64, 7, stride=2, padding=3, bias=False), _BatchNorm(64)
        layers, cin = [], 64
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = [Bottleneck(cin, planes, stride)] + [Bottleneck(4 * planes, planes) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
            cin = 4 * planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.mid_conv, self.mid_bn = _conv(2048, 2048, 3), _BatchNorm(2048)
        self.up1 = UpProjection(2048, 1024, 0)
        self.up2 = UpProjection(1024, 512, 512)
        self.up3 = UpProjection(512, 256, 256)
        self.up4 = UpProjection(256, 64, 64)
        self.depth_head = nn.Parameter(torch.empty(1, 64, 3, 3))
        self.affinity_head = nn.Parameter(torch.empty(8, 64, 3, 3))
        bound = 1 / math.sqrt(64 * 9)  # nn.Conv2d's default initialization
        nn.init.uniform_(self.depth_head, -bound, bound)
        nn.init.uniform_(self.affinity_head, -bound, bound)
        self._caches = [_Cache() for _ in range(2)]
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)
        self.eval()

    # -- preprocessing -----------------------------------------------------------------------------------------

    def encode_rgb(self, rgb: Tensor) -> Tensor:
        """(B, 3, h, w) RGB in [0, 255] -> the network's RGB input (module docstring: ToTensor, Normalize, and the
        loader's uint8 round trip when `rgb_uint8_wrap`)."""
        n = (rgb / 255.0 - self._mean) / self._std
        if not self.config.rgb_uint8_wrap:
            return n
        return torch.remainder(torch.trunc(n * 255.0), 256.0) / 255.0

    def network_scale(self, H: int, W: int, K: Tensor | None) -> float:
        """Factor from the input size to the network's size (module docstring, `input_scaling`)."""
        mode = self.config.input_scaling
        if mode == "none":
            return 1.0
        if mode == "focal" or (mode == "auto" and K is not None):
            if K is None:
                raise CalibrationError("cspn-nyu: input_scaling 'focal' needs the intrinsics K")
            fx = K[..., 0, 0].reshape(-1)
            if not bool(torch.all(fx > 0)) or not bool(torch.all(fx == fx[0])):
                raise CalibrationError("cspn-nyu: fx must be positive and equal across the batch")
            return float(self.config.focal_px) / float(fx[0])
        return self.config.short_side / min(H, W)

    # -- network at its own scale ------------------------------------------------------------------------------

    def run_network(self, x_rgb: Tensor, sparse: Tensor) -> Tensor:
        """(B, 1, h, w) CSPN output (metres, not clamped) from the encoded RGB (`encode_rgb`) and the sparse depth
        at the network's size."""
        fast = _fast(self)
        x = torch.cat([x_rgb, sparse], dim=1)
        if self.stem_conv.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        h, w = x.shape[-2:]
        stem = self.stem_conv(x)  # skip before the BatchNorm (authors' layout)
        e = F.max_pool2d(F.relu(self.stem_bn(stem)), 3, 2, 1)
        s1 = self.layer1(e)
        s2 = self.layer2(s1)
        e = self.layer4(self.layer3(s2))
        e = _conv_bn(e, self.mid_conv, self.mid_bn, self._caches[0], fast)
        size3 = (_half(s2.shape[-2]), _half(s2.shape[-1]))
        d = self.up1(e, size3)
        d = self.up2(d, tuple(s2.shape[-2:]), s2)
        d = self.up3(d, tuple(s1.shape[-2:]), s1)
        d = self.up4(d, tuple(stem.shape[-2:]), stem)
        heads = torch.cat([self.depth_head, self.affinity_head])
        if fast:
            convs = self._caches[1].get(
                (self.depth_head, self.affinity_head),
                lambda: packed_subpixel(lambda: (torch.cat([self.depth_head, self.affinity_head]), None)),
            )
            out = unpool_conv_packed(d, convs, (h, w))
        else:
            out = F.conv2d(unpool2(d, (h, w)), heads, padding=1)
        h0 = out[:, :1].contiguous()
        aff = normalize_affinity(authors_to_gather(out[:, 1:].float()), self.config.normalization)
        valid = sparse > 0
        if self.config.authors_reimpose:
            # H stays H0 at the sparse pixels: exactly the authors' (1 - m)·H + m·H0 after every step.
            aff = aff * (~valid).to(aff.dtype)
            return cspn_propagate(h0.float(), aff, iterations=self.config.iterations, normalized=True)
        return cspn_propagate(
            h0.float(), aff, iterations=self.config.iterations, sparse=sparse.float(), normalized=True
        )

    # -- public call -------------------------------------------------------------------------------------------

    def forward(self, rgb: Tensor, sparse: Tensor, K: Tensor | None = None) -> dict[str, Tensor | None]:
        """See `base`: rgb (B, 3, H, W) in [0, 255], sparse (B, 1, H, W) metres (0 = missing), K (B, 3, 3) or None.

        Returns {"pred": (B, 1, H, W) float32 metres >= 0 (0 = no estimate), "confidence": None}.

        Raises:
            ShapeError: wrong shapes, or a scaled network input over 4096 px a side.
            CalibrationError: "focal" scaling without K, or a non-positive fx.
        """
        bound = check_shape("rgb", rgb.shape, ("B", 3, "H", "W"))
        B, H, W = bound["B"], bound["H"], bound["W"]
        check_shape("sparse", sparse.shape, (B, 1, H, W))
        if K is not None:
            check_shape("K", K.shape, ("*", 3, 3))
        rgb, sparse = rgb.float(), torch.nan_to_num(sparse.float(), nan=0.0, posinf=0.0, neginf=0.0)
        s = self.network_scale(H, W, K)
        h, w = max(1, round(H * s)), max(1, round(W * s))
        if max(h, w) > _MAX_NETWORK_SIDE:
            raise ShapeError(
                f"cspn-nyu: the network input would be {h}x{w} px (scale {s:.3g}); at most {_MAX_NETWORK_SIDE}"
            )
        if (h, w) == (H, W):
            pred = self.run_network(self.encode_rgb(rgb), sparse)
        else:
            small = F.interpolate(rgb, size=(h, w), mode="bilinear", align_corners=False, antialias=h < H)
            small = small.round_().clamp_(0, 255)  # the loader's resized image is uint8
            pred = self.run_network(self.encode_rgb(small), resample_sparse(sparse, (h, w)))
            pred = F.interpolate(pred, size=(H, W), mode="bilinear", align_corners=False)
            if not self.config.authors_reimpose:
                pred = torch.where(sparse > 0, sparse, pred)
        return {"pred": pred.clamp_min(0.0), "confidence": None}


def resample_sparse(sparse: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 1, H, W) sparse depth (metres, 0 = missing) on an (h, w) grid: each measurement goes to the cell its
    pixel centre falls in, the nearest (smallest) depth kept per cell (z-buffer), 0 elsewhere."""
    B, _, H, W = sparse.shape
    h, w = size
    rows = ((torch.arange(H, device=sparse.device) + 0.5) * (h / H)).long().clamp_(max=h - 1)
    cols = ((torch.arange(W, device=sparse.device) + 0.5) * (w / W)).long().clamp_(max=w - 1)
    cell = (rows[:, None] * w + cols[None, :]).reshape(1, -1).expand(B, -1)
    vals = sparse.reshape(B, -1)
    vals = torch.where(vals > 0, vals, torch.full_like(vals, math.inf))
    out = torch.full((B, h * w), math.inf, dtype=sparse.dtype, device=sparse.device)
    out.scatter_reduce_(1, cell, vals, reduce="amin")
    out = torch.where(torch.isinf(out), torch.zeros_like(out), out)
    return out.reshape(B, 1, h, w)


# ---------------------------------------------------------------------------------------------------------------
# The authors' state-dict names


_BLOCK_NAMES = {
    "conv1": "up_conv",
    "bn1": "up_bn",
    "conv1_1": "fuse_conv",
    "bn1_1": "fuse_bn",
    "conv2": "conv",
    "bn2": "bn",
    "sc_conv1": "shortcut_conv",
    "sc_bn1": "shortcut_bn",
}
_TOP_NAMES = {"conv1_1": "stem_conv", "bn1": "stem_bn", "conv2": "mid_conv", "bn2": "mid_bn"}
_DROPPED = re.compile(r"^(up_proj_layer[1-4]\.|conv3\.|post_process_layer\.)|\.num_batches_tracked$")


def authors_key(key: str) -> str | None:
    """The authors' `torch_resnet_cspn_nyu.ResNet` key (DataParallel's "module." already stripped) -> ours.

    None for what the network never uses: the `up_proj_layer1..4` blocks and `conv3` (built, never called), the
    propagation's constant summing convolution `post_process_layer.sum_conv` (saved once it has run), and BatchNorm
    `num_batches_tracked` counters.  Unknown keys are returned unchanged (the importer then refuses them).
    """
    if _DROPPED.search(key):
        return None
    head, _, rest = key.partition(".")
    if head in _TOP_NAMES:
        return f"{_TOP_NAMES[head]}.{rest}"
    m = re.fullmatch(r"gud_up_proj_layer([1-6])\.([a-z0-9_]+)\.(.+)", key)
    if m is None:
        return key
    n, part, tail = int(m.group(1)), m.group(2), m.group(3)
    if n <= 4 and part in _BLOCK_NAMES:
        return f"up{n}.{_BLOCK_NAMES[part]}.{tail}"
    if n >= 5 and part == "conv1" and tail == "weight":
        return "depth_head" if n == 5 else "affinity_head"
    return key


def _build(config: CSPNNYUConfig) -> nn.Module:
    return CSPNNYUNet(config)


ARCHITECTURE = register(
    Architecture(
        name="cspn-nyu",
        title="CSPN, ResNet-50 UNet + 24-step 8-neighbour CSPN (Cheng et al., ECCV 2018)",
        training_data="NYU Depth v2",
        needs_intrinsics=False,
        stride=1,
        config_from_dict=CSPNNYUConfig.from_dict,
        default_config=CSPNNYUConfig(),
        build=_build,
        authors_key=authors_key,
        manifest="cspn_nyu.json",
    )
)
