"""Training losses for depth completion, over pixels with valid ground truth (gt > 0).

Tensors are (B, 1, H, W) float32 metres (depth) or [0, 1] (confidence); ground truth 0 = no data.
Pixel means are pooled over the batch (sum over valid pixels / number of valid pixels), as CSPN/NLSPN train.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ShapeError

__all__ = [
    "LossConfig",
    "completion_loss",
    "confidence_target_loss",
    "laplace_nll",
    "masked_l1",
    "masked_l2",
]

_CONF_MODES = ("target", "laplace")


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Weights of the loss terms.

    Attributes:
        l1: weight of the L1 term on `pred` (metres).
        l2: weight of the L2 (squared metres) term on `pred`.
        init: weight of the L1 term on `pred_init` (the pre-propagation depth); 0 = off.
        confidence: weight of the confidence term; 0 = off.
        confidence_mode: "target" (BCE of confidence against exp(-|error| / scale), error detached) or
            "laplace" (Laplace negative log-likelihood with scale b = confidence_scale / confidence).
        confidence_scale: metres; the error at which the target confidence is 1/e (or the Laplace scale at c=1).
    """

    l1: float = 1.0
    l2: float = 0.0
    init: float = 0.0
    confidence: float = 0.0
    confidence_mode: str = "target"
    confidence_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.confidence_mode not in _CONF_MODES:
            raise ValueError(f"confidence_mode must be one of {_CONF_MODES}, got {self.confidence_mode!r}")
        if min(self.l1, self.l2, self.init, self.confidence) < 0 or self.confidence_scale <= 0:
            raise ValueError("loss weights must be >= 0 and confidence_scale > 0")


def _valid(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != gt.shape:
        raise ShapeError(f"prediction shape {tuple(pred.shape)} != ground-truth shape {tuple(gt.shape)}")
    mask = (gt > 0).to(pred.dtype)
    if weight is not None:
        mask = mask * weight
    return mask, mask.sum().clamp_min(1.0)


def masked_l1(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |pred - gt| (metres) over pixels with gt > 0, optionally weighted by `weight` (same shape)."""
    mask, n = _valid(pred, gt, weight)
    return ((pred - gt).abs() * mask).sum() / n


def masked_l2(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean (pred - gt)^2 (square metres) over pixels with gt > 0, optionally weighted."""
    mask, n = _valid(pred, gt, weight)
    return ((pred - gt) ** 2 * mask).sum() / n


def confidence_target_loss(
    pred: torch.Tensor, gt: torch.Tensor, confidence: torch.Tensor, *, scale: float = 1.0
) -> torch.Tensor:
    """BCE between confidence in [0, 1] and the target exp(-|pred - gt| / scale); gradients reach only confidence."""
    mask, n = _valid(pred, gt, None)
    target = torch.exp(-(pred.detach() - gt).abs() / scale)
    c = confidence.clamp(1e-6, 1 - 1e-6)
    bce = -(target * torch.log(c) + (1 - target) * torch.log1p(-c))
    return (bce * mask).sum() / n


def laplace_nll(pred: torch.Tensor, gt: torch.Tensor, confidence: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
    """Laplace NLL with scale b = scale / confidence: |e| c / scale - log(c) (+ const), mean over valid pixels.

    Minimised at c = scale / |e| (clamped to 1 by the model's sigmoid), so confidence falls where errors grow.
    The depth error is detached so this term trains only the confidence head.
    """
    mask, n = _valid(pred, gt, None)
    c = confidence.clamp_min(1e-6)
    nll = (pred.detach() - gt).abs() * c / scale - torch.log(c)
    return (nll * mask).sum() / n


def completion_loss(
    outputs: dict[str, torch.Tensor], gt: torch.Tensor, cfg: LossConfig, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of a `CSPNNet` output dict (`pred`, optional `pred_init`, `confidence`) against gt (B, 1, H, W).

    Returns:
        (total scalar tensor, {term name: float value}) - the dict is for logging.
    """
    pred = outputs["pred"]
    terms: dict[str, torch.Tensor] = {}
    if cfg.l1:
        terms["l1"] = cfg.l1 * masked_l1(pred, gt, weight)
    if cfg.l2:
        terms["l2"] = cfg.l2 * masked_l2(pred, gt, weight)
    if cfg.init and outputs.get("pred_init") is not None:
        terms["init"] = cfg.init * masked_l1(outputs["pred_init"], gt, weight)
    if cfg.confidence and outputs.get("confidence") is not None:
        fn = confidence_target_loss if cfg.confidence_mode == "target" else laplace_nll
        terms["confidence"] = cfg.confidence * fn(pred, gt, outputs["confidence"], scale=cfg.confidence_scale)
    if not terms:
        raise ValueError("LossConfig has every term switched off")
    total = torch.stack(list(terms.values())).sum()
    return total, {k: float(v.detach()) for k, v in terms.items()}
