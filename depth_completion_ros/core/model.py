"""Learned CSPN completer: a compact ResNet-style encoder–decoder + CSPN propagation.

Input: RGB (B, 3, H, W) float in [0, 1], sparse depth (B, 1, H, W) float32 metres (0 = missing) and its
validity mask (B, 1, H, W) in {0, 1}.  The network predicts, at full resolution, the initial depth H0 (as a
normalized log depth in [0, 1] between `min_depth` and `max_depth`, so 0.1–250 m share one scale),
8 raw affinities, an output confidence and (optionally) the CSPN++ replacement gate; then
`propagation.cspn_propagate` refines H0 with the sparse measurements re-imposed at every step.
Any H×W: inputs are padded to a multiple of the network stride (2**depth) and outputs cropped back.
No pretrained / downloaded weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .device import resolve_device
from .errors import ShapeError, check_shape
from .propagation import MAX_ITERATIONS, NORMALIZATIONS, cspn_propagate, normalize_affinity

__all__ = ["MAX_ITERATIONS", "MAX_PARAMETERS", "CSPNModelConfig", "CSPNNet", "prepare_for_inference", "resolve_device"]

MAX_PARAMETERS = 200_000_000
"""Most weights a configuration may ask for (~0.8 GB float32), checked before anything is allocated."""

_INT_BOUNDS = {"base_width": (1, 1024), "depth": (1, 7), "blocks_per_stage": (1, 64), "max_width": (1, 4096)}
_INT_BOUNDS |= {"iterations": (0, MAX_ITERATIONS), "dilation": (1, 16)}


@dataclass(frozen=True, kw_only=True)
class CSPNModelConfig:
    """Configuration of `CSPNNet`.

    Attributes:
        base_width: channels of the full-resolution stage; stage i has min(base_width·2**i, max_width).
        depth: number of stride-2 encoder stages (network stride 2**depth).
        blocks_per_stage: residual blocks per encoder stage.
        max_width: channel cap of the deepest stages.
        iterations: CSPN propagation steps (0 = return H0).
        normalization: affinity normalization (`propagation.NORMALIZATIONS`).
        dilation: propagation neighbour spacing.
        use_confidence_gate: CSPN++ replacement D ← m·S + (1−m)·D with a learned gate m (else D ← S).
        min_depth: metres, lower end of the depth encoding (> 0).
        max_depth: metres, upper end of the depth encoding.
    """

    base_width: int = 32
    depth: int = 4
    blocks_per_stage: int = 1
    max_width: int = 256
    iterations: int = 12
    normalization: str = "8sum_abs"
    dilation: int = 1
    use_confidence_gate: bool = True
    min_depth: float = 0.1
    max_depth: float = 250.0

    def __post_init__(self) -> None:
        """Validate the fields.

        Raises:
            ValueError: a field of the wrong type or out of range (each bounded: a checkpoint's metadata sizes
                the model, so it must not be able to ask for more than `MAX_PARAMETERS` weights).
        """
        for name, (low, high) in _INT_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be in {low}..{high}, got {value}")
        if not isinstance(self.use_confidence_gate, bool):
            raise ValueError(f"use_confidence_gate must be a bool, got {self.use_confidence_gate!r}")
        if not isinstance(self.normalization, str):
            raise ValueError(f"normalization must be a string, got {self.normalization!r}")
        for name in ("min_depth", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if self.base_width < 1 or self.max_width < self.base_width:
            raise ValueError(f"need 1 <= base_width <= max_width, got {self.base_width}, {self.max_width}")
        if not 1 <= self.depth <= 7:
            raise ValueError(f"depth must be in 1..7, got {self.depth}")
        if self.blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {self.blocks_per_stage}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {self.dilation}")
        if not 0 < self.min_depth < self.max_depth or not math.isfinite(self.max_depth):
            raise ValueError(f"need 0 < min_depth < max_depth < inf, got {self.min_depth}, {self.max_depth}")

        if self.parameter_count() > MAX_PARAMETERS:
            raise ValueError(f"configuration asks for {self.parameter_count():,} weights (at most {MAX_PARAMETERS:,})")

    def parameter_count(self) -> int:
        """Number of weights of `CSPNNet(self)` (3×3 convolutions and BatchNorm, counted without building it)."""
        widths = [min(self.base_width * 2**i, self.max_width) for i in range(self.depth + 1)]

        def block(cin: int, cout: int, stride: int = 1) -> int:
            n = 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout
            return n + (cin * cout + 2 * cout if cin != cout or stride != 1 else 0)

        n = 9 * 5 * widths[0] + 2 * widths[0] + block(widths[0], widths[0])
        for i in range(1, self.depth + 1):
            n += block(widths[i - 1], widths[i], 2) + (self.blocks_per_stage - 1) * block(widths[i], widths[i])
            n += block(widths[i] + widths[i - 1], widths[i - 1])
        out = 10 + int(bool(self.use_confidence_gate))
        return n + 9 * widths[0] * widths[0] + 2 * widths[0] + 9 * widths[0] * out + out

    @property
    def stride(self) -> int:
        """Total downsampling factor of the encoder."""
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serializable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CSPNModelConfig:
        """Build from `to_dict` output.

        Raises:
            ValueError: unknown fields or invalid values.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CSPNModelConfig fields: {unknown}")
        return cls(**data)


def _conv_bn(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class _ResBlock(nn.Module):
    """Basic ResNet block: conv-BN-ReLU-conv-BN + (projected) shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, stride), nn.ReLU(inplace=True), _conv_bn(cout, cout))
        self.short = nn.Identity() if cin == cout and stride == 1 else _conv_bn(cin, cout, stride, k=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.short(x))


def _head(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 3, 1, 1),
    )


class CSPNNet(nn.Module):
    """Encoder–decoder + CSPN.  `forward(rgb, sparse, mask)` -> dict (see `forward`)."""

    def __init__(self, config: CSPNModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CSPNModelConfig()
        widths = [min(cfg.base_width * 2**i, cfg.max_width) for i in range(cfg.depth + 1)]
        self.stem = nn.Sequential(_conv_bn(5, widths[0]), nn.ReLU(inplace=True), _ResBlock(widths[0], widths[0]))
        self.encoder = nn.ModuleList()
        for i in range(1, cfg.depth + 1):
            blocks = [_ResBlock(widths[i - 1], widths[i], stride=2)]
            blocks += [_ResBlock(widths[i], widths[i]) for _ in range(cfg.blocks_per_stage - 1)]
            self.encoder.append(nn.Sequential(*blocks))
        # decoder[j] fuses stage depth-j (upsampled) with the skip of stage depth-j-1
        self.decoder = nn.ModuleList(
            _ResBlock(widths[i] + widths[i - 1], widths[i - 1]) for i in range(cfg.depth, 0, -1)
        )
        w0 = widths[0]
        # one full-resolution head: [H0 (1), affinities (8), confidence (1), gate (1, optional)]
        self.head = _head(w0, 10 + int(cfg.use_confidence_gate))
        self._log_min = math.log(cfg.min_depth)
        self._log_range = math.log(cfg.max_depth) - math.log(cfg.min_depth)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Start near a uniform propagation, a mid-range depth (geometric mean of the range), confidence 0.5
        # and a gate near 1 (measurements trusted): small last layer, gate bias +3.
        last = self.head[-1]
        if isinstance(last, nn.Conv2d):
            nn.init.normal_(last.weight, std=1e-3)
            if last.bias is not None and self.config.use_confidence_gate:
                with torch.no_grad():
                    last.bias[10] = 3.0

    def encode_depth(self, depth: Tensor) -> Tensor:
        """Metres -> normalized log depth in [0, 1] (0 for missing depth <= 0)."""
        valid = depth > 0
        x = (torch.log(depth.clamp_min(self.config.min_depth)) - self._log_min) / self._log_range
        return torch.where(valid, x.clamp(0.0, 1.0), torch.zeros_like(x))

    def decode_depth(self, x: Tensor) -> Tensor:
        """Normalized log depth in [0, 1] -> metres in [min_depth, max_depth]."""
        return torch.exp(x * self._log_range + self._log_min)

    def forward(self, rgb: Tensor, sparse: Tensor, mask: Tensor | None = None) -> dict[str, Tensor | None]:
        """Complete `sparse` guided by `rgb`.

        Args:
            rgb: (B, 3, H, W) float in [0, 1].
            sparse: (B, 1, H, W) float metres, 0 = missing.
            mask: (B, 1, H, W) validity in {0, 1}; None = (sparse > 0).

        Returns:
            dict with "pred" (B, 1, H, W) float32 metres after propagation, "pred_init" (B, 1, H, W) metres
            (H0), "affinity" (B, 8, H, W) normalized affinities, "confidence" (B, 1, H, W) in [0, 1]
            (output confidence), "gate" (B, 1, H, W) in [0, 1] (CSPN++ replacement gate) or None.

        Raises:
            ShapeError: inconsistent shapes.
        """
        bound = check_shape("rgb", rgb.shape, ("B", 3, "H", "W"))
        B, H, W = bound["B"], bound["H"], bound["W"]
        check_shape("sparse", sparse.shape, (B, 1, H, W))
        if mask is None:
            mask = (sparse > 0).to(sparse.dtype)
        check_shape("mask", mask.shape, (B, 1, H, W))
        if not (rgb.is_floating_point() and sparse.is_floating_point()):
            raise ShapeError(f"rgb and sparse must be floating point, got {rgb.dtype}, {sparse.dtype}")
        cfg = self.config
        mask = mask.to(sparse.dtype)
        sparse = sparse * (mask > 0)
        s = cfg.stride
        ph, pw = (-H) % s, (-W) % s
        x = torch.cat([rgb.to(sparse.dtype) * 2 - 1, self.encode_depth(sparse), mask], dim=1)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        if x.device.type == "cuda" and next(self.parameters()).is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        feats = [self.stem(x)]
        for stage in self.encoder:
            feats.append(stage(feats[-1]))
        y = feats[-1]
        for j, block in enumerate(self.decoder):
            skip = feats[-2 - j]
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip.to(y.dtype)], dim=1))
        y = y[:, :, :H, :W]
        out = self.head(y).float()
        init = self.decode_depth(torch.sigmoid(out[:, :1]))
        raw_aff = out[:, 1:9]
        confidence = torch.sigmoid(out[:, 9:10])
        gate = torch.sigmoid(out[:, 10:11]) if cfg.use_confidence_gate else None
        aff = normalize_affinity(raw_aff, cfg.normalization, dilation=cfg.dilation)
        sparse32 = sparse.float()
        pred = cspn_propagate(
            init,
            aff,
            iterations=cfg.iterations,
            sparse=sparse32,
            sparse_confidence=gate,
            dilation=cfg.dilation,
            normalized=True,
        )
        return {"pred": pred, "pred_init": init, "affinity": aff, "confidence": confidence, "gate": gate}


def prepare_for_inference(
    model: CSPNNet, device: str | torch.device = "auto", *, channels_last: bool = True, compile: bool = False
) -> nn.Module:
    """Move `model` to `device` (see `resolve_device`), eval mode, channels_last on CUDA, optional torch.compile.

    Run the result under `torch.inference_mode()` (and `torch.autocast("cuda")` on CUDA).
    """
    dev = resolve_device(device)
    model = model.to(dev).eval()
    if channels_last and dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile:
        return torch.compile(model)  # type: ignore[return-value]
    return model
