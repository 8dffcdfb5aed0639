"""Public attention-gate op of medseg_kernels, called by the blocks (``from medseg_kernels.gate import ...``).

Dispatch (``medseg_kernels.dispatch``): CUDA inputs of a Triton-supported dtype (fp16, bf16, fp32) and channel widths
run the registered custom ops ``medseg::attention_gate_fwd`` / ``_bwd`` (``gate_op.py``: Triton forward and backward
of ``gate_triton.py``, one opaque op for ``torch.compile``); anything else runs the pure-PyTorch reference of
``medseg_kernels.gate_ref`` (any device and dtype, differentiable, float64-capable). ``MEDSEG_KERNELS=reference|triton``
forces either.
"""

from __future__ import annotations

import torch

from medseg_kernels import gate_op


def attention_gate(
    x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor, psi: torch.Tensor,
    b_psi: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Fused additive attention gate: x · sigmoid(ψ · relu(W_x x + up(W_g g + b)) + b_ψ) (formulas: ``gate_ref``).

    Args:
        x: skip features (B, Cx, *S), 2D or 3D.
        g: gating features (B, Cg, *Sg); Sg = S, or coarser (typically S/2), linearly resized (align_corners=False).
        w_x: (F, Cx) projection of x (no bias).
        w_g: (F, Cg) projection of g.
        b: (F,) bias of the sum.
        psi: (F,) weights of the 1-channel ψ projection.
        b_psi: (1,) bias of ψ.

    Returns:
        (B, Cx, *S), x gated by α.
    """
    return gate_op.attention_gate(x, g, w_x, w_g, b, psi, b_psi)
