"""Public attention ops of medseg_kernels, called by the blocks (``from medseg_kernels.attention import ...``).

Dispatch (``medseg_kernels.dispatch.backend``): CUDA inputs of a Triton-supported dtype (fp16, bf16, fp32) and head
dim run the registered custom ops ``medseg::global_attention_*`` / ``medseg::neighborhood_attention_*``
(``global_attn.py``, ``neighborhood.py``: Triton forward and backward, one opaque op for ``torch.compile``), except
that global attention on CUDA takes PyTorch's SDPA where that was measured faster (``global_attn.route``: whenever
gradients are needed, and for dk = dv); anything else runs the pure-PyTorch references of
``medseg_kernels.attention_ref`` (any device and dtype, differentiable, float64-capable).
``MEDSEG_KERNELS=reference|triton`` forces either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medseg_kernels import global_attn, neighborhood


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Global (all-to-all) attention, softmax over the keys.

    Args:
        q: queries (B, heads, N, dk).
        k: keys (B, heads, N, dk).
        v: values (B, heads, N, dv); dv may differ from dk.
        scale: factor on q·kᵀ before the softmax (default ``dk**-0.5``; position attention uses 1).

    Returns:
        (B, heads, N, dv).
    """
    return global_attn.global_attention(q, k, v, scale)


def neighborhood_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
    scale: float | None = None,
) -> torch.Tensor:
    """Neighbourhood attention (NATTEN semantics) over 1 to 3 spatial axes.

    Each query attends to ``kernel_size`` keys per axis around it, the window shifted inwards at the borders so that
    every query sees exactly ∏ kernel_size keys; ``dilation`` spaces the window within the query's sub-grid.

    Args:
        q: queries (B, heads, *S, d).
        k: keys (B, heads, *S, d).
        v: values (B, heads, *S, dv).
        kernel_size: window per axis (an int for all axes); each axis needs ``S // dilation >= kernel_size``.
        dilation: dilation per axis.
        scale: factor on q·kᵀ before the softmax (default ``d**-0.5``).

    Returns:
        (B, heads, *S, dv).
    """
    return neighborhood.neighborhood_attention(q, k, v, kernel_size, dilation, scale)
