"""PENet and its backbone ENet (Hu et al., "Towards Precise and Efficient Image Guided Depth Completion", ICRA 2021).

Our own implementation, written from the paper and checked output-equal to the authors' code
(JUGGHM/PENet_ICRA2021, `benchmarks/verify_upstream_penet.py`); the authors' repository was read for architecture
facts only (layer shapes, state-dict names, preprocessing).  Two registered architectures:

* ``"enet"``: the two-branch backbone alone (released as ``e.pth.tar``; the authors' recommendation for real time).
  An RGB-dominant branch predicts a depth and a confidence; its depth and the sparse depth feed a depth-dominant
  branch; the two depths are fused by a per-pixel softmax of the confidences.  Every residual block concatenates a
  geometric (xyz) encoding to its convolutions' inputs (below).
* ``"penet"``: ENet followed by DA-CSPN++ with dilation rate 2 (the authors' ``PENet_C2``, released as
  ``pe.pth.tar``): 3×3, 5×5 and 7×7 kernels propagate 6 steps at dilation 2 with guidance from half-resolution
  features, then 6 steps at dilation 1 with full-resolution guidance; after each step the sparse depth is
  re-imposed with a learned gate (sigmoid); the three kernels' results are fused by a per-pixel softmax.
  Propagation uses `core.kernel_propagation` (its docstring maps the authors' kernel convention onto ours).

Inputs (the `base.PublishedNet` convention): rgb (B, 3, H, W) float32 in [0, 255] (the authors feed unnormalized
0-255 values), sparse (B, 1, H, W) metres (0 = missing), K (B, 3, 3) pinhole intrinsics of this image, pixels.

Preprocessing as in training, and what happens elsewhere:
* Any H × W: padded at the bottom and right to a multiple of 32 (rgb by edge replication, sparse with 0 = missing)
  and cropped back, so K and every original pixel's geometric encoding are unchanged by the padding.
* Geometric encoding, reproduced exactly as the released weights learned it (the authors' ``GeometryFeature`` on
  their ``AddCoordsNp`` position map): at level s = 0…5 (resolution 1/2^s) the channels are
  ``(z·(v_s − c_y)/f_y, z·(u_s − c_x)/f_x, z)`` with z the closest valid sparse depth in each 2^s × 2^s block
  (0 where none) and
  ``v_s = 352/351 · (i + (2^s − 1)/2^(s+1))`` for row i of level s (u_s likewise with 1216/1215): the authors
  normalize pixel centres to [−1, 1] over a 352 × 1216 map (H − 1 intervals) and map back with H, and at the
  coarser levels compare the level's row index with the full-resolution c_y, f_y.  Both are kept: the weights were
  trained on them.  For other image sizes the same formula continues (the stretch constants stay those of the
  training map, `coord_height` / `coord_width`).
* The authors' loader shifts c_y by −11.5 px (a centre crop of 375 → 352 rows) but crops at the bottom (−23 px),
  so every training encoding used c_y + 11.5 px of the crop's true c_y.  With the true K of the image, we add
  `cy_shift_px` = 11.5 to c_y to reproduce the training input (0 would use the geometrically exact K).
* Outside KITTI's training domain: the network saw only the bottom 352 rows of 375-row KITTI images (the top 23
  rows, and anything above the LiDAR's field of view, have no sparse depth, so their geometric encoding is 0
  there); depth predicted in such rows is an extrapolation from image features alone and is unreliable.  The
  training images all came from one camera model (f ≈ 721 px); other focal lengths change the encoding's scale.

Measured against the authors' code at equal (seeded random) weights on the shared KITTI frame (1216×352, float32
CPU): max |Δdepth| ENet 0 m, PENet 2.7e-5 m; after `prepare_for_inference` (what the completer runs: folded
batch norms, oneDNN, Winograd) 3.7e-4 / 4.8e-4 m.  Per frame on a 2-core AVX-512 CPU (2 threads, load 1.3–2.0):
ENet 636–742 ms vs 1219–1383 ms (0.52–0.54×; 0.518–0.521× in the last 3 runs), PENet 1.06–1.20 s vs 2.72–2.92 s
(0.39–0.41×).  ENet is nearly all convolution: with Winograd, about 100 GMAC of products remain, which at this CPU's
measured ~230 GMAC/s take some 450 ms before the transforms' memory traffic (about 130 ms), which leaves it just
above its 0.5× target here.

Defects of the authors' code, and what we do instead:
* Guidance normalization divides by Σ|w| with no floor (NaN where all raw weights are 0): we use
  max(Σ|w|, 1e-12), which leaves such a pixel at its reference depth; identical elsewhere.
* The authors' "encoder" convolutions that flip the kernels cost k⁶ multiply-adds per pixel; we flip with shifted
  slices (`kernel_propagation.scatter_to_gather`), identical output.
* Their training model (``PENet_C2_train``, which wrote the released state dict) has an attention fusion
  (``dimhalf_s2``, ``att_12``) of two names for one tensor (``depth_s2 = depth`` is then written in place), so its
  softmax-weighted sum returns that tensor: a no-op, which their inference model (``PENet_C2``) omits.  Those
  weights are dropped on import, as are the fixed ``encoder3/5/7`` flip convolutions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import narrow_conv, winograd
from ..device import onednn_ops
from ..errors import ShapeError, check_shape
from ..kernel_propagation import normalized_scatter_to_gather, propagate_kxk
from .base import Architecture, register

__all__ = [
    "ENetConfig",
    "PENetConfig",
    "PENetModel",
    "authors_key",
    "geometric_encoding",
    "prepare_for_inference",
]

STRIDE = 32
LEVELS = 6
KERNELS = (3, 5, 7)
_POOL_FAR = 600.0  # the authors' "no measurement" code in the closest-depth pooling, metres


def _bounded(name: str, value: Any, kind: type, lo: float, hi: float) -> Any:
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
        value = float(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name}: {value!r} outside [{lo}, {hi}]")
    return value


@dataclass(frozen=True, kw_only=True)
class ENetConfig:
    """ENet configuration (defaults: the authors' released weights).

    Attributes:
        cy_shift_px: added to the given K's c_y for the geometric encoding, pixels (see the module docstring).
        coord_height: rows of the authors' position map (their coordinate stretch 352/351).
        coord_width: columns of the authors' position map (their coordinate stretch 1216/1215).
    """

    cy_shift_px: float = 11.5
    coord_height: int = 352
    coord_width: int = 1216

    _BOUNDS: ClassVar[dict[str, tuple[type, float, float]]] = {
        "cy_shift_px": (float, -1000.0, 1000.0),
        "coord_height": (int, 2, 16384),
        "coord_width": (int, 2, 16384),
    }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ENetConfig:
        """Bounded parser: every field type- and range-checked.

        Raises:
            ValueError: naming the unknown, mistyped or out-of-range field.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"configuration: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key not in names:
                raise ValueError(f"{key}: unknown configuration field of {cls.__name__}")
            kind, lo, hi = cls._BOUNDS[key]
            kwargs[key] = _bounded(key, value, kind, lo, hi)
        return cls(**kwargs)


@dataclass(frozen=True, kw_only=True)
class PENetConfig(ENetConfig):
    """PENet (DA-CSPN++, dilation rate 2) configuration.

    Attributes:
        iterations: propagation steps of each stage (the authors: 6).
    """

    iterations: int = 6

    _BOUNDS: ClassVar[dict[str, tuple[type, float, float]]] = {**ENetConfig._BOUNDS, "iterations": (int, 0, 64)}


# --------------------------------------------------------------------------------------------------- layers


class _ConvBN(nn.Module):
    """Convolution (no bias) + batch norm (+ ReLU); `fuse` folds the norm into the convolution for inference.

    `run(parts, other, relu, post)` computes relu?(conv(cat(parts)) + other) + post.  After `use_mkldnn` (CPU
    inference), it runs as oneDNN convolutions with prepacked weights and the addition and ReLU fused as post-ops, one
    convolution per part accumulating into the next (the concatenation is never materialized); `use_winograd` and
    `use_narrow` then pick faster kernels for some shapes.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        *,
        stride: int = 1,
        relu: bool = True,
        transposed: bool = False,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        pad = k // 2
        if transposed:
            self.conv: nn.Module = nn.ConvTranspose2d(
                cin, cout, k, stride=stride, padding=pad, output_padding=output_padding, bias=False
            )
        else:
            self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout)
        self.relu = relu
        self._mkldnn = False
        self._packed: dict[tuple[int, ...], list[Tensor]] = {}
        self._winograd: list[winograd.WinogradConv3x3] = []  # after `use_winograd` (not a submodule)
        self._narrow: list[narrow_conv.NarrowConv3x3] = []  # after `use_narrow` (not a submodule)

    def forward(self, x: Tensor) -> Tensor:
        return self.run((x,))

    def run(
        self,
        parts: tuple[Tensor, ...],
        other: Tensor | None = None,
        relu: bool | None = None,
        post: Tensor | None = None,
    ) -> Tensor:
        """relu?(conv(cat(parts, 1)) + other) + post; `relu` defaults to the layer's own."""
        relu = self.relu if relu is None else relu
        x = parts[0]
        if (wino := self._winograd_for(x)) is not None:
            return wino(parts, other, relu, post=post)  # the additions fused
        if self._fast(x):
            if self._narrow and x.shape[0] == 1 and len(parts) == 1 and other is None and post is None:
                return self._narrow[0](x, relu)
            y = self._run_mkldnn(parts, other, relu)
        else:
            y = self.bn(self.conv(torch.cat(parts, 1) if len(parts) > 1 else x))
            if other is not None:
                y += other
            if relu:
                y = F.relu(y, inplace=True)
        return y if post is None else y.add_(post)

    @staticmethod
    def _merge_narrow(parts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Inputs of at most 8 channels in all become one, zero-padded to a multiple of 4 channels: oneDNN's
        convolutions are several times slower per multiply-add on 1- or 2-channel inputs (measured on the stems)."""
        channels = sum(p.shape[1] for p in parts)
        if channels > 8 or (len(parts) == 1 and channels % 4 == 0):
            return parts
        planes = [p[:, i] for p in parts for i in range(p.shape[1])]  # (B, H, W) each
        planes += [torch.zeros_like(planes[0])] * (-channels % 4)
        return (torch.stack(planes, -1).permute(0, 3, 1, 2),)  # NHWC memory

    def run_appending(
        self, parts: tuple[Tensor, ...], other: Tensor | None, relu: bool, append: Tensor
    ) -> Tensor | None:
        """cat((run(parts, other, relu), append), 1) as one NHWC tensor where the Winograd path writes it without a
        concatenation pass (`WinogradConv3x3.__call__`'s `append`); None elsewhere."""
        wino = self._winograd_for(parts[0])
        return None if wino is None else wino(parts, other, relu, append)

    def _fast(self, x: Tensor) -> bool:
        """On the oneDNN path (prepared, float32 CPU inference)."""
        return self._mkldnn and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()

    def _winograd_for(self, x: Tensor) -> winograd.WinogradConv3x3 | None:
        """The Winograd kernel where this input can use it (oneDNN path, batch 1), else None."""
        return self._winograd[0] if self._winograd and x.shape[0] == 1 and self._fast(x) else None

    def _run_mkldnn(self, parts: tuple[Tensor, ...], other: Tensor | None, relu: bool) -> Tensor:
        ops, conv = onednn_ops(), self.conv
        if not isinstance(conv, nn.ConvTranspose2d):
            parts = self._merge_narrow(parts)
        key = tuple(p.shape[1] for p in parts)
        if key not in self._packed:
            self._packed[key] = self._pack(ops, parts)
        weights = self._packed[key]
        pad, stride, dil = list(conv.padding), list(conv.stride), list(conv.dilation)
        if isinstance(conv, nn.ConvTranspose2d):
            return ops._convolution_transpose_pointwise(
                parts[0], weights[0], conv.bias, pad, list(conv.output_padding), stride, dil, 1,
                "relu" if relu else "none", [], "",
            )  # fmt: skip
        acc = other
        last = len(parts) - 1
        for i, (x, w) in enumerate(zip(parts, weights, strict=True)):
            bias = conv.bias if i == 0 else None
            unary = "relu" if relu and i == last else "none"
            if acc is None:
                acc = ops._convolution_pointwise(x, w, bias, pad, stride, dil, 1, unary, [], "")
            else:
                acc = ops._convolution_pointwise.binary(
                    x, acc, w, bias, pad, stride, dil, 1, "add", None, unary if unary != "none" else None, [], ""
                )
        return acc

    @torch.no_grad()
    def _pack(self, ops: Any, parts: tuple[Tensor, ...]) -> list[Tensor]:
        conv = self.conv
        pad, stride, dil = list(conv.padding), list(conv.stride), list(conv.dilation)
        if isinstance(conv, nn.ConvTranspose2d):
            w = ops._reorder_convolution_transpose_weight(
                conv.weight, pad, list(conv.output_padding), stride, dil, 1, list(parts[0].shape)
            )
            return [w]
        packed, c0 = [], 0
        weight = conv.weight
        if sum(x.shape[1] for x in parts) > weight.shape[1]:  # merged narrow input: zero weights for the padding
            weight = F.pad(weight, (0, 0, 0, 0, 0, parts[0].shape[1] - weight.shape[1]))
        for x in parts:
            c1 = c0 + x.shape[1]
            w = weight[:, c0:c1].contiguous(memory_format=torch.channels_last)
            packed.append(ops._reorder_convolution_weight(w, pad, stride, dil, 1, list(x.shape)))
            c0 = c1
        return packed

    @torch.no_grad()
    def fuse(self) -> None:
        """conv ← BN ∘ conv (eval statistics); the norm becomes the identity."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        bn, conv = self.bn, self.conv
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
        conv.weight.mul_(scale.reshape(shape))
        conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
        self.bn = nn.Identity()
        self._packed.clear()

    def use_mkldnn(self) -> bool:
        """Switch to the oneDNN path (needs `fuse` first: the fused ops carry the bias, not the norm)."""
        self._mkldnn = isinstance(self.bn, nn.Identity) and onednn_ops() is not None
        self._packed.clear()
        self._winograd = []
        self._narrow = []
        return self._mkldnn

    @torch.no_grad()
    def use_narrow(self) -> bool:
        """On the oneDNN path, run a 3×3 stride-1 (transposed) convolution to at most `narrow_conv.MAX_OUTPUTS`
        outputs (the 2-channel heads) as `narrow_conv.NarrowConv3x3` (batch 1): 2× faster than oneDNN's direct one."""
        conv = self.conv
        self._narrow = []
        if (
            self._mkldnn
            and conv.groups == 1
            and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1)
            and conv.padding == (1, 1)
            and conv.dilation == (1, 1)
            and conv.out_channels <= narrow_conv.MAX_OUTPUTS
            and getattr(conv, "output_padding", (0, 0)) == (0, 0)
        ):
            build = narrow_conv.NarrowConv3x3
            if isinstance(conv, nn.ConvTranspose2d):
                build = narrow_conv.NarrowConv3x3.from_transposed
            self._narrow = [build(conv.weight, conv.bias)]
        return bool(self._narrow)

    @torch.no_grad()
    def use_winograd(self, max_channels: int) -> bool:
        """On the oneDNN path, run as Winograd (`core.winograd`; batch 1, NHWC) when it measured faster here:

        * a 3×3 stride-1 convolution with 16 … `max_channels` outputs: F(4×4, 3×3) up to 512 outputs (its
          transformed weights take 4× the dense ones' memory), F(2×2, 3×3) above (1.8×: at 1/32 resolution both
          measured equal, F(4×4) reading 2.25× more weights); not the 2-channel heads (Winograd 1.8× slower than
          direct there; `use_narrow`);
        * a 5×5 stride-2 transposed convolution (the decoder's 2× upsampling) with 128 … min(512, `max_channels`)
          inputs, as four sub-pixel phases (5.8× memory).  At 64 inputs (full resolution) the phases move more
          data than the multiplications save, at 1024 the weights dominate: both stay direct (measured equal).
        """
        conv = self.conv
        self._winograd = []
        if not (self._mkldnn and winograd.available() and conv.groups == 1 and conv.dilation == (1, 1)):
            return False
        if isinstance(conv, nn.ConvTranspose2d):
            if (
                conv.kernel_size == (5, 5)
                and conv.stride == (2, 2)
                and conv.padding == (2, 2)
                and conv.output_padding == (1, 1)
                and 128 <= conv.in_channels <= min(512, max_channels)
            ):
                self._winograd = [winograd.WinogradConv3x3.from_transposed(conv.weight, conv.bias)]
        elif (
            conv.kernel_size == (3, 3)
            and conv.stride == (1, 1)
            and conv.padding == (1, 1)
            and 16 <= conv.out_channels <= max_channels
        ):
            tile = 4 if conv.out_channels <= 512 else 2
            self._winograd = [winograd.WinogradConv3x3(conv.weight, conv.bias, tile=tile)]
        return bool(self._winograd)


class _GeoBlock(nn.Module):
    """Residual block whose two 3×3 convolutions also see the geometric encoding (xyz, 3 channels)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _ConvBN(cin + 3, cout, 3, stride=stride)
        self.conv2 = _ConvBN(cout + 3, cout, 3, relu=False)
        self.skip = _ConvBN(cin + 3, cout, 1, stride=stride, relu=False) if stride != 1 or cin != cout else None

    def forward(
        self, parts: tuple[Tensor, ...], geo_out: Tensor, *, append_geo: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """parts: the input and the encoding of its level, as parts to concatenate (the depth branch's blocks take
        the RGB decoder's features first; the encoding may come appended to the last part).

        Returns (output, cat((output, geo_out), 1) or None): with `append_geo`, the concatenation the next block
        reads is made where that costs no extra pass (Winograd output), and the output is a view of it.
        """
        identity = parts[0] if self.skip is None else self.skip.run(parts)
        hidden = self.conv1.run(parts)
        # the encoding comes first in the second convolution's input; residual addition and ReLU fused
        if append_geo:
            wide = self.conv2.run_appending((geo_out, hidden), identity, relu=True, append=geo_out)
            if wide is not None:
                return wide[:, : self.conv2.conv.out_channels], wide
        return self.conv2.run((geo_out, hidden), other=identity, relu=True), None


def _deconv(cin: int, cout: int) -> _ConvBN:
    return _ConvBN(cin, cout, 5, stride=2, transposed=True, output_padding=1)


_RGB_ENCODER = ((32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2),
                (256, 256, 1), (256, 512, 2), (512, 512, 1), (512, 1024, 2), (1024, 1024, 1))  # fmt: skip
_DEPTH_ENCODER = ((32, 64, 2), (64, 64, 1), (128, 128, 2), (128, 128, 1), (256, 256, 2),
                  (256, 256, 1), (512, 512, 2), (512, 512, 1), (1024, 1024, 2), (1024, 1024, 1))  # fmt: skip
_DECODER = ((1024, 512), (512, 256), (256, 128), (128, 64), (64, 32))


class ENet(nn.Module):
    """The two-branch backbone.  `forward` -> (coarse depth (B,1,H,W), features (B,64,H,W), (B,128,H/2,W/2))."""

    def __init__(self) -> None:
        super().__init__()
        self.rgb_stem = _ConvBN(4, 32, 5)
        self.rgb_encoder = nn.ModuleList(_GeoBlock(*spec) for spec in _RGB_ENCODER)
        self.rgb_decoder = nn.ModuleList(_deconv(*spec) for spec in _DECODER)
        self.rgb_head = _ConvBN(32, 2, 3, transposed=True)  # depth, confidence
        self.depth_stem = _ConvBN(2, 32, 5)
        self.depth_encoder = nn.ModuleList(_GeoBlock(*spec) for spec in _DEPTH_ENCODER)
        self.fusion_decoder = nn.ModuleList(_deconv(*spec) for spec in _DECODER)
        self.depth_head = _ConvBN(32, 2, 3)  # depth, confidence

    @staticmethod
    def _encode(blocks: nn.ModuleList, x: Tensor, geo: list[Tensor], skips: dict[int, Tensor]) -> list[Tensor]:
        """Encoder outputs 1..10; block i sees the encoding of levels (i+1)//2 and i//2 + 1; `skips[i]` is
        concatenated before block i."""
        outs: list[Tensor] = []
        with_geo = None  # cat((x, encoding of its level), 1) when the previous block made it
        for i, block in enumerate(blocks):
            parts = (with_geo,) if with_geo is not None else (x, geo[(i + 1) // 2])
            if i in skips:
                parts = (skips[i], *parts)
            strided_next = i + 1 < len(blocks) and blocks[i + 1].skip is not None  # reads the concatenation
            x, with_geo = block(parts, geo[i // 2 + 1], append_geo=strided_next)
            outs.append(x)
        return outs

    def forward(
        self, rgb: Tensor, sparse: Tensor, geo: list[Tensor], *, features: bool = True
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """`features=False` (ENet alone): the guidance features are not built (None)."""
        # RGB-dominant branch
        stem = self.rgb_stem.run((rgb, sparse))
        enc = self._encode(self.rgb_encoder, stem, geo, {})
        up = enc[9]
        plus = []  # decoder outputs + skip: levels 4, 3, 2, 1, 0
        for dec, skip in zip(self.rgb_decoder, (enc[7], enc[5], enc[3], enc[1], stem), strict=True):
            up = dec.run((up,), post=skip)
            plus.append(up)
        rgb_out = self.rgb_head(up)
        rgb_depth, rgb_conf = rgb_out[:, 0:1], rgb_out[:, 1:2]
        # depth-dominant branch (RGB decoder features enter before blocks 3, 5, 7, 9)
        dstem = self.depth_stem.run((sparse, rgb_depth))
        denc = self._encode(self.depth_encoder, dstem, geo, {2: plus[3], 4: plus[2], 6: plus[1], 8: plus[0]})
        x = enc[9] + denc[9]
        dec_out = []
        for dec, skip in zip(self.fusion_decoder, (denc[7], denc[5], denc[3], denc[1], None), strict=True):
            if features:  # dec_out keeps the decoder output
                x = dec(x)
                dec_out.append(x)
                x = x if skip is None else x + skip
            else:
                x = dec.run((x,), post=skip)
        d_out = self.depth_head(x)
        d_depth, d_conf = d_out[:, 0:1], d_out[:, 1:2]
        w = torch.softmax(torch.cat((rgb_conf, d_conf), 1), dim=1)
        coarse = w[:, 0:1] * rgb_depth + w[:, 1:2] * d_depth
        if not features:
            return coarse, None, None
        return coarse, torch.cat((plus[4], dec_out[4]), 1), torch.cat((plus[3], dec_out[3]), 1)


class _Guidance(nn.Module):
    """Per-stage DA-CSPN++ heads: kernel-fusion logits (3), re-imposition gate (1), and the raw k² − 1 weights."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.kernel_conf = _ConvBN(channels, len(KERNELS), 3, relu=False)
        self.gate = _ConvBN(channels, 1, 3, relu=False)
        self.guide = nn.ModuleList(_ConvBN(channels, k * k - 1, 3, relu=False) for k in KERNELS)
        self._merged: list[_ConvBN] = []  # after `merge`: the five heads as one convolution (not a submodule)

    def heads(self, feature: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(gate (B,1,h,w) in [0, 1], kernel-fusion softmax (B,3,h,w), gather weights (B,k²,h,w) per kernel)."""
        if self._merged and self._merged[0]._mkldnn and feature.device.type == "cpu" and not torch.is_grad_enabled():
            out = self._merged[0](feature)
            sizes = [len(KERNELS), 1, *(k * k - 1 for k in KERNELS)]
            conf, gate, *raws = torch.split(out, sizes, dim=1)
        else:
            conf, gate, raws = self.kernel_conf(feature), self.gate(feature), [g(feature) for g in self.guide]
        weights = [normalized_scatter_to_gather(r.contiguous(), k) for r, k in zip(raws, KERNELS, strict=True)]
        return torch.sigmoid(gate).contiguous(), torch.softmax(conf, dim=1).contiguous(), weights

    @torch.no_grad()
    def merge(self) -> None:
        """One convolution for the five heads (same input; folded norms needed): one pass over the features."""
        convs = [self.kernel_conf, self.gate, *self.guide]
        if not all(isinstance(c.bn, nn.Identity) for c in convs):
            return
        first = convs[0].conv
        merged = _ConvBN(first.in_channels, sum(c.conv.out_channels for c in convs), 3, relu=False)
        merged.to(first.weight.device)
        merged.conv.weight.copy_(torch.cat([c.conv.weight for c in convs]))
        merged.conv.bias = nn.Parameter(torch.cat([c.conv.bias for c in convs]))
        merged.bn = nn.Identity()
        merged.use_mkldnn()
        self._merged = [merged] if merged._mkldnn else []


def _closest_pool(d: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """2×2 pooling of sparse depth keeping the closest valid value (0 where none), and of the validity."""
    code = -(1 - valid) * _POOL_FAR - d
    pooled = -F.max_pool2d(code, 2)
    valid2 = F.max_pool2d(valid, 2)
    return pooled - (1 - valid2) * _POOL_FAR, valid2


def geometric_encoding(sparse: Tensor, K: Tensor, config: ENetConfig) -> list[Tensor]:
    """The xyz encodings of levels 0…5 (module docstring), (B, 3, H/2^s, W/2^s); H, W multiples of 32.

    Args:
        sparse: (B, 1, H, W) metres, 0 = missing.
        K: (B, 3, 3) intrinsics of this image, pixels.
        config: coordinate constants and the c_y shift.
    """
    B, _, H, W = sparse.shape
    dev, dt = sparse.device, sparse.dtype
    v = torch.arange(H, device=dev, dtype=dt) / (config.coord_height - 1) * 2 - 1
    u = torch.arange(W, device=dev, dtype=dt) / (config.coord_width - 1) * 2 - 1
    pos = torch.stack((u.expand(H, W), v[:, None].expand(H, W)))[None]  # (1, 2, H, W): u, v as the authors
    fy = K[:, 1, 1].reshape(B, 1, 1, 1).to(dt)
    cy = (K[:, 1, 2] + config.cy_shift_px).reshape(B, 1, 1, 1).to(dt)
    fx = K[:, 0, 0].reshape(B, 1, 1, 1).to(dt)
    cx = K[:, 0, 2].reshape(B, 1, 1, 1).to(dt)
    z, valid = sparse, (sparse > 0).to(dt)
    out = []
    for s in range(LEVELS):
        if s:
            pos = F.avg_pool2d(pos, 2)
            z, valid = _closest_pool(z, valid)
        vn, un = pos[:, 1:2], pos[:, 0:1]
        y = z * (0.5 * (config.coord_height / 2**s) * (vn + 1) - cy) / fy
        x = z * (0.5 * (config.coord_width / 2**s) * (un + 1) - cx) / fx
        out.append(torch.cat((y, x, z), 1))
    return out


class PENetModel(nn.Module):
    """ENet (``refine=False``) or PENet (ENet + DA-CSPN++ dilation 2); see the module docstring.

    `forward(rgb, sparse, K)` -> {"pred": (B, 1, H, W) metres, non-positive raw outputs set to 0 (= no depth),
    "confidence": None}.  `infer` returns the raw network output (the authors' values, for verification).
    """

    def __init__(self, config: ENetConfig, *, refine: bool) -> None:
        super().__init__()
        self.config = config
        self.refine = refine
        self.backbone = ENet()
        if refine:
            self.stage_s2 = _Guidance(128)
            self.stage_s1 = _Guidance(64)
        self._channels_last = False
        self.eval()

    def forward(self, rgb: Tensor, sparse: Tensor, K: Tensor | None) -> dict[str, Tensor | None]:
        pred = self.infer(rgb, sparse, K)
        return {"pred": torch.nan_to_num(pred, nan=0.0, posinf=0.0).clamp_min(0.0), "confidence": None}

    def infer(self, rgb: Tensor, sparse: Tensor, K: Tensor | None) -> Tensor:
        """Raw depth (B, 1, H, W), metres (may be <= 0 where the network extrapolates)."""
        bound = check_shape("rgb", rgb.shape, ("B", 3, "H", "W"))
        B, H, W = bound["B"], bound["H"], bound["W"]
        check_shape("sparse", sparse.shape, (B, 1, H, W))
        if K is None:
            raise ShapeError("K: PENet / ENet need the intrinsics of the image")
        check_shape("K", K.shape, (B, 3, 3))
        Hp, Wp = -(-H // STRIDE) * STRIDE, -(-W // STRIDE) * STRIDE
        rgb, sparse = rgb.float(), sparse.float()
        if (Hp, Wp) != (H, W):
            rgb = F.pad(rgb, (0, Wp - W, 0, Hp - H), mode="replicate")
            sparse = F.pad(sparse, (0, Wp - W, 0, Hp - H))
        geo = geometric_encoding(sparse, K.float(), self.config)
        if self._channels_last:
            rgb = rgb.contiguous(memory_format=torch.channels_last)
            sparse_cl = sparse.contiguous(memory_format=torch.channels_last)
            geo = [g.contiguous(memory_format=torch.channels_last) for g in geo]
        else:
            sparse_cl = sparse
        coarse, feat1, feat2 = self.backbone(rgb, sparse_cl, geo, features=self.refine)
        out = self._propagate(coarse.contiguous(), feat1, feat2, sparse) if self.refine else coarse
        return out[:, :, :H, :W].contiguous()

    def _propagate(self, coarse: Tensor, feat1: Tensor, feat2: Tensor, sparse: Tensor) -> Tensor:
        """DA-CSPN++: dilation 2 on the residue grids with half-resolution guidance, then dilation 1."""
        n = self.config.iterations
        s2, s1 = self.stage_s2, self.stage_s1
        d2, _ = _closest_pool(sparse, (sparse > 0).to(sparse.dtype))
        gate2, conf2, w2 = s2.heads(feat2)
        depth_s2 = torch.empty_like(coarse)
        for r in range(2):
            for c in range(2):
                h0 = coarse[:, :, r::2, c::2].contiguous()
                acc = None
                for i, k in enumerate(KERNELS):
                    res = propagate_kxk(h0, w2[i], kernel_size=k, iterations=n, sparse=d2, gate=gate2)
                    term = conf2[:, i : i + 1] * res
                    acc = term if acc is None else acc + term
                depth_s2[:, :, r::2, c::2] = acc
        gate1, conf1, w1 = s1.heads(feat1)
        out = None
        for i, k in enumerate(KERNELS):
            res = propagate_kxk(depth_s2, w1[i], kernel_size=k, iterations=n, sparse=sparse, gate=gate1)
            term = conf1[:, i : i + 1] * res
            out = term if out is None else out + term
        return out


def prepare_for_inference(
    model: PENetModel,
    *,
    fuse: bool = True,
    channels_last: bool = False,
    mkldnn: bool = True,
    winograd_channels: int = 1024,
) -> PENetModel:
    """Eval mode, batch norms folded into the convolutions (`fuse`), NHWC activations (`channels_last`) and, on the
    CPU, oneDNN convolutions with prepacked weights and fused addition / ReLU (`mkldnn`, needs `fuse`), with the
    3×3 convolutions of at most `winograd_channels` outputs and the decoder's upsampling as Winograd
    (`_ConvBN.use_winograd`; 0: none); in place.  The completer applies it with the defaults (`Architecture.prepare`).

    Outputs change by float32 rounding only (measured in `benchmarks/verify_upstream_penet.py`: 3.7e-4 m ENet,
    4.8e-4 m PENet).
    channels_last is off by default: it measured no faster (the Winograd layers read and write NHWC either way;
    the propagation needs NCHW planes).  The prepacked and Winograd weights are made on the first call per input
    layout / width and kept beside the dense ones (ENet at 1216×352, process RSS after 3 frames with
    `core.allocator` configured: 1.6 GB as built, 2.4 GB prepared without Winograd, 2.9–3.0 GB with
    `winograd_channels=512`, 3.1–3.3 GB with the default); call again after moving the model to another device.
    """
    model.eval()
    if channels_last:  # before the prepacked and Winograd weights are made from the dense ones
        model.to(memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, _ConvBN):
            if fuse:
                m.fuse()
            m._mkldnn = False
            if mkldnn and fuse and next(m.parameters()).device.type == "cpu":
                m.use_mkldnn()
                m.use_winograd(winograd_channels)
                m.use_narrow()
    for m in model.modules():
        if isinstance(m, _Guidance):
            m._merged = []
            if mkldnn and fuse and next(m.parameters()).device.type == "cpu":
                m.merge()  # direct: as Winograd it doubled PENet's difference to the authors' (6.5e-4 m) for 4 % time
    if any(m._winograd for m in model.modules() if isinstance(m, _ConvBN)):
        winograd.warm_up()
    if any(m._narrow for m in model.modules() if isinstance(m, _ConvBN)):
        narrow_conv.warm_up()
    model._channels_last = channels_last
    return model


# --------------------------------------------------------------------------------------------------- key map

_BLOCK = {"conv1": "conv1.conv", "bn1": "conv1.bn", "conv2": "conv2.conv", "bn2": "conv2.bn",
          "downsample.0": "skip.conv", "downsample.1": "skip.bn"}  # fmt: skip
_PAIR = {"0": "conv", "1": "bn"}
_RGB_DEC = {"8": 0, "6": 1, "4": 2, "2": 3, "0": 4}
_DROP_PENET = re.compile(r"^(encoder[357]|(dimhalf_s2|att_12)\..*)$")


def _backbone_key(key: str) -> str | None:
    """The authors' ENet key -> ours (without the "backbone." prefix), or None when not an ENet key."""
    if m := re.fullmatch(r"(rgb_conv_init|depth_conv_init|rgb_decoder_output|decoder_layer6)\.([01])\.(\w+)", key):
        ours = {"rgb_conv_init": "rgb_stem", "depth_conv_init": "depth_stem",
                "rgb_decoder_output": "rgb_head", "decoder_layer6": "depth_head"}[m[1]]  # fmt: skip
        return f"{ours}.{_PAIR[m[2]]}.{m[3]}"
    if m := re.fullmatch(r"(rgb_encoder_layer|depth_layer)(\d+)\.(conv1|bn1|conv2|bn2|downsample\.[01])\.(\w+)", key):
        i = int(m[2])
        if 1 <= i <= 10:
            branch = "rgb_encoder" if m[1] == "rgb_encoder_layer" else "depth_encoder"
            return f"{branch}.{i - 1}.{_BLOCK[m[3]]}.{m[4]}"
    if (m := re.fullmatch(r"rgb_decoder_layer(\d)\.([01])\.(\w+)", key)) and m[1] in _RGB_DEC:
        return f"rgb_decoder.{_RGB_DEC[m[1]]}.{_PAIR[m[2]]}.{m[3]}"
    if m := re.fullmatch(r"decoder_layer([1-5])\.([01])\.(\w+)", key):
        return f"fusion_decoder.{int(m[1]) - 1}.{_PAIR[m[2]]}.{m[3]}"
    return None


def _unmapped(key: str) -> str:
    return f"unmapped:{key}"  # never one of our names: the importer reports it as unexpected


def _enet_key(key: str) -> str | None:
    ours = _backbone_key(key)
    return _unmapped(key) if ours is None else f"backbone.{ours}"


def _penet_key(key: str) -> str | None:
    if _DROP_PENET.match(key):
        return None  # fixed flip convolutions, and the training model's no-op attention fusion
    if key.startswith("backbone."):
        ours = _backbone_key(key[len("backbone.") :])
        return _unmapped(key) if ours is None else f"backbone.{ours}"
    m = re.fullmatch(r"(kernel_conf_layer|mask_layer|iter_guide_layer([357]))(_s2)?(\.generate)?\.([01])\.(\w+)", key)
    if m is None or (m[2] is None) != (m[4] is None):  # ".generate" exactly on the guidance layers
        return _unmapped(key)
    stage = "stage_s2" if m[3] else "stage_s1"
    head = {"kernel_conf_layer": "kernel_conf", "mask_layer": "gate"}.get(m[1])
    if head is None:
        head = f"guide.{KERNELS.index(int(m[2]))}"
    return f"{stage}.{head}.{_PAIR[m[5]]}.{m[6]}"


def authors_key(arch: str, key: str) -> str | None:
    """The authors' state-dict key of `arch` ("enet" / "penet", after stripping "module.") -> ours, or None to drop.

    Keys that match nothing of the authors' models come back as "unmapped:<key>" (never one of ours).
    """
    return _enet_key(key) if arch == "enet" else _penet_key(key)


def _build_enet(config: ENetConfig) -> PENetModel:
    if not isinstance(config, ENetConfig):
        raise ValueError(f"config: expected ENetConfig, got {type(config).__name__}")
    return PENetModel(config, refine=False)


def _build_penet(config: PENetConfig) -> PENetModel:
    if not isinstance(config, PENetConfig):
        raise ValueError(f"config: expected PENetConfig, got {type(config).__name__}")
    return PENetModel(config, refine=True)


ENET = register(
    Architecture(
        name="enet",
        title="ENet, the backbone of PENet (Hu et al., ICRA 2021)",
        training_data="KITTI Depth Completion",
        needs_intrinsics=True,
        stride=STRIDE,
        config_from_dict=ENetConfig.from_dict,
        default_config=ENetConfig(),
        build=_build_enet,
        authors_key=_enet_key,
        manifest="enet.json",
        prepare=prepare_for_inference,
    )
)

PENET = register(
    Architecture(
        name="penet",
        title="PENet: ENet + DA-CSPN++, dilation rate 2 (Hu et al., ICRA 2021)",
        training_data="KITTI Depth Completion",
        needs_intrinsics=True,
        stride=STRIDE,
        config_from_dict=PENetConfig.from_dict,
        default_config=PENetConfig(),
        build=_build_penet,
        authors_key=_penet_key,
        manifest="penet.json",
        prepare=prepare_for_inference,
    )
)
