"""Losses: MONAI's Dice+CE by default, focal Tversky, and nnU-Net-style deep-supervision weighting."""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss, TverskyLoss
from torch import nn


class FocalTverskyLoss(nn.Module):
    """(1 − TI)^(1/γ), TI = (TP + 1) / (TP + β·FN + α·FP + 1), mean over batch and classes (Abraham & Khan 2018).

    Args:
        alpha: weight of false positives (0.3 in the paper).
        beta: weight of false negatives (0.7).
        gamma: focal parameter γ (4/3); the exponent is 1/γ.
        include_background: include class 0.
        softmax: apply softmax to the logits (else sigmoid, for single-channel binary output).
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4 / 3,
        include_background: bool = True,
        softmax: bool = True,
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.tversky = TverskyLoss(
            include_background=include_background,
            to_onehot_y=softmax,
            softmax=softmax,
            sigmoid=not softmax,
            alpha=alpha,
            beta=beta,
            smooth_nr=1.0,
            smooth_dr=1.0,
            reduction="none",
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # logits: (B, C, *S); target: (B, 1, *S) integer labels
        one_minus_ti = self.tversky(logits, target).clamp_min(0)  # (B, C, 1, ...)
        return one_minus_ti.pow(1.0 / self.gamma).mean()


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net weights: 1/2^i, the coarsest set to 0 when there are ≥ 3 outputs, normalised to sum 1."""
    w = [1.0 / 2**i for i in range(n)]
    if n > 2:
        w[-1] = 0.0
    total = sum(w)
    return [x / total for x in w]


def with_deep_supervision(loss: nn.Module, n_outputs: int, weights: list[float] | None = None) -> nn.Module:
    """Wrap ``loss`` so that a list of outputs (finest first) is scored against resized targets."""
    if n_outputs <= 1:
        return loss
    if weights is not None and len(weights) != n_outputs:
        raise ValueError(f"model.ds_weights has {len(weights)} entries but the network has {n_outputs} outputs")
    return DeepSupervisionLoss(loss, weights=weights or deep_supervision_weights(n_outputs))  # type: ignore[arg-type]
