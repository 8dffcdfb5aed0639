"""``medseg::global_attention``: registered custom op (forward + backward) with Triton / reference dispatch.

``torch.ops.medseg.global_attention_fwd(q, k, v, scale) -> (out, lse)`` and
``torch.ops.medseg.global_attention_bwd(q, k, v, out, lse, dout, scale) -> (dq, dk, dv)`` are opaque to
``torch.compile`` (fake implementations give shapes); ``register_autograd`` connects them. Inside, CUDA inputs
(or ``MEDSEG_KERNELS=triton``) run the Triton kernels of ``global_attn_triton``; anything else runs the torch
reference of ``global_attn_ref``. :func:`global_attention` is the entry point used by ``medseg_kernels.attention``.
"""

from __future__ import annotations

import torch

from medseg_kernels.attention_ref import _check_heads_layout, global_attention_ref
from medseg_kernels.dispatch import run_triton, use_triton
from medseg_kernels.global_attn_ref import compute_dtype, global_attention_bwd_ref, global_attention_fwd_ref

MAX_QK_DIM = 128  # q/k head dims the Triton kernels take (padded to a power of two ≥ 16); v is chunked, any width


def triton_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the Triton kernels serve these inputs (backend, dtype, device and q/k head dim)."""
    return use_triton(q, k, v) and q.shape[-1] <= MAX_QK_DIM


@torch.library.custom_op("medseg::global_attention_fwd", mutates_args=())
def global_attention_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if triton_supported(q, k, v):
        result = run_triton("global_attn_triton", "forward", q, k, v, scale)
        if result is not None:
            return result
    out, lse = global_attention_fwd_ref(q, k, v, scale)
    return out.contiguous(), lse.contiguous()


@global_attention_fwd.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    out = v.new_empty(*q.shape[:3], v.shape[-1])  # new_empty: contiguous, like the implementations' outputs
    return out, q.new_empty(q.shape[:3], dtype=compute_dtype(q.dtype))


@torch.library.custom_op("medseg::global_attention_bwd", mutates_args=())
def global_attention_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dout: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if triton_supported(q, k, v) and dout.dtype == q.dtype:
        result = run_triton("global_attn_triton", "backward", q, k, v, out, lse, dout, scale)
        if result is not None:
            return result
    dq, dk, dv = global_attention_bwd_ref(q, k, v, out, lse, dout, scale)
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


@global_attention_bwd.register_fake
def _(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dout: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    q, k, v, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):  # type: ignore[no-untyped-def]
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = global_attention_bwd(q, k, v, out, lse, dout.contiguous(), ctx.scale)
    return dq, dk, dv, None


global_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(scale · q kᵀ) v: the custom op where Triton serves the inputs, else the differentiable reference."""
    _check_heads_layout(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if triton_supported(q, k, v):
        return global_attention_fwd(q, k, v, scale)[0]
    return global_attention_ref(q, k, v, scale)
