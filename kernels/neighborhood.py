"""``medseg::neighborhood_attention``: registered custom op (forward + backward) with Triton / reference dispatch.

``torch.ops.medseg.neighborhood_attention_fwd(q, k, v, kernel_size, dilation, scale) -> (out, lse)`` and
``torch.ops.medseg.neighborhood_attention_bwd(q, k, v, out, lse, dout, kernel_size, dilation, scale) -> (dq, dk, dv)``
are opaque to ``torch.compile`` (fake implementations give shapes); ``register_autograd`` connects them. Inside, CUDA
inputs (or ``MEDSEG_KERNELS=triton``) run the Triton kernels of ``neighborhood_triton``; anything else runs the torch
reference of ``neighborhood_ref``. :func:`neighborhood_attention` is the entry point of ``medseg_kernels.attention``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medseg_kernels.attention_ref import _per_axis, neighborhood_attention_ref
from medseg_kernels.dispatch import run_triton, use_triton
from medseg_kernels.global_attn_ref import compute_dtype
from medseg_kernels.neighborhood_ref import neighborhood_attention_bwd_ref, neighborhood_attention_fwd_ref

MAX_HEAD_DIM = 128  # q/k and v head dims the Triton kernels take (whole rows in registers)


def triton_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the Triton kernels serve these inputs (backend, dtype, device, head dims)."""
    return use_triton(q, k, v) and max(q.shape[-1], v.shape[-1]) <= MAX_HEAD_DIM


@torch.library.custom_op("medseg::neighborhood_attention_fwd", mutates_args=())
def neighborhood_attention_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: list[int], dilation: list[int], scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    kernel, dil = tuple(kernel_size), tuple(dilation)
    if triton_supported(q, k, v):
        result = run_triton("neighborhood_triton", "forward", q, k, v, kernel, dil, scale)
        if result is not None:
            return result
    out, lse = neighborhood_attention_fwd_ref(q, k, v, kernel, dil, scale)
    return out.contiguous(), lse.contiguous()


@neighborhood_attention_fwd.register_fake
def _(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: list[int], dilation: list[int], scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return v.new_empty(v.shape), q.new_empty(q.shape[:-1], dtype=compute_dtype(q.dtype))


@torch.library.custom_op("medseg::neighborhood_attention_bwd", mutates_args=())
def neighborhood_attention_bwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, dout: torch.Tensor,
    kernel_size: list[int], dilation: list[int], scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    kernel, dil = tuple(kernel_size), tuple(dilation)
    if triton_supported(q, k, v) and dout.dtype == q.dtype:
        result = run_triton("neighborhood_triton", "backward", q, k, v, out, lse, dout, kernel, dil, scale)
        if result is not None:
            return result
    grads = neighborhood_attention_bwd_ref(q, k, v, out, lse, dout, kernel, dil, scale)
    return grads[0].contiguous(), grads[1].contiguous(), grads[2].contiguous()


@neighborhood_attention_bwd.register_fake
def _(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, dout: torch.Tensor,
    kernel_size: list[int], dilation: list[int], scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    q, k, v, kernel_size, dilation, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.args = (kernel_size, dilation, scale)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):  # type: ignore[no-untyped-def]
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = neighborhood_attention_bwd(q, k, v, out, lse, dout.contiguous(), *ctx.args)
    return dq, dk, dv, None, None, None


neighborhood_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def neighborhood_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
    scale: float | None = None,
) -> torch.Tensor:
    """Neighbourhood attention (see ``medseg_kernels.attention``): the custom op where Triton serves the inputs,
    else the differentiable reference."""
    if not (q.shape == k.shape and k.shape[:-1] == v.shape[:-1]) or q.ndim not in (4, 5, 6):
        raise ValueError(
            f"expected q, k (B, heads, *S, d) and v (B, heads, *S, dv), got {q.shape}, {k.shape}, {v.shape}"
        )
    n = q.ndim - 3
    kernel, dil = _per_axis(kernel_size, n, "kernel_size"), _per_axis(dilation, n, "dilation")
    for size, kk, r in zip(q.shape[2:-1], kernel, dil, strict=True):
        if kk < 1 or r < 1 or size // r < kk:
            raise ValueError(f"an axis of {size} cannot hold a window of {kk} with dilation {r}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if triton_supported(q, k, v):
        return neighborhood_attention_fwd(q, k, v, list(kernel), list(dil), scale)[0]
    return neighborhood_attention_ref(q, k, v, kernel, dil, scale)
