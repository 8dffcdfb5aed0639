"""Losses: MONAI's Dice+CE by default, focal Tversky, and deep-supervision weighting (every head trained)."""

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


DS_SCHEMES = ("halving", "nnunet")


def deep_supervision_weights(n: int, scheme: str | list[float] | None = "halving") -> list[float]:
    """Loss weights of ``n`` outputs (finest first), normalised to sum 1.

    Args:
        n: outputs of the network (1 + deep-supervision heads).
        scheme: ``halving`` (default, also ``None``): 1/2^i for every output, so every head a network builds is
            trained; ``nnunet``: nnU-Net's 1/2^i with the coarsest set to 0 when there are ≥ 3 outputs (the
            training module then removes that head, see :func:`split_zero_heads`); or explicit weights.

    Raises:
        ValueError: on an unknown scheme, a list of the wrong length, or negative weights.
    """
    if isinstance(scheme, list | tuple):
        w = [float(x) for x in scheme]
        if len(w) != n:
            raise ValueError(f"model.ds_weights has {len(w)} entries but the network has {n} outputs")
        if min(w) < 0 or sum(w) <= 0:
            raise ValueError(f"model.ds_weights must be non-negative with a positive sum, got {w}")
    elif scheme in (None, "halving", "nnunet"):
        w = [1.0 / 2**i for i in range(n)]
        if scheme == "nnunet" and n > 2:
            w[-1] = 0.0
    else:
        raise ValueError(f"model.ds_weights must be null, {' or '.join(DS_SCHEMES)}, or a list, got {scheme!r}")
    total = sum(w)
    return [x / total for x in w]


def split_zero_heads(weights: list[float]) -> tuple[list[float], int]:
    """``(weights without the trailing zeros, renormalised; number of trailing zeros)``.

    A head with weight 0 gets no gradient and would never be trained: the coarsest heads with weight 0 are dropped
    from the network instead. A zero weight before a non-zero one cannot be dropped and is refused.
    """
    n_zero = 0
    while n_zero < len(weights) - 1 and weights[len(weights) - 1 - n_zero] == 0:
        n_zero += 1
    kept = weights[: len(weights) - n_zero]
    if any(w <= 0 for w in kept):
        raise ValueError(
            f"model.ds_weights {weights}: a zero weight on an output that is not the coarsest leaves its head "
            "untrained; give every output a positive weight (zeros are allowed only at the coarse end)"
        )
    total = sum(kept)
    return [w / total for w in kept], n_zero


def with_deep_supervision(loss: nn.Module, n_outputs: int, weights: list[float] | None = None) -> nn.Module:
    """Wrap ``loss`` so that a list of outputs (finest first) is scored against resized targets."""
    if n_outputs <= 1:
        return loss
    if weights is not None and len(weights) != n_outputs:
        raise ValueError(f"model.ds_weights has {len(weights)} entries but the network has {n_outputs} outputs")
    return DeepSupervisionLoss(loss, weights=weights or deep_supervision_weights(n_outputs))  # type: ignore[arg-type]
