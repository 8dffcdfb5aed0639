"""``medseg::global_attention``: registered custom op (forward + backward) with Triton / reference dispatch.

``torch.ops.medseg.global_attention_fwd(q, k, v, scale) -> (out, lse)`` and
``torch.ops.medseg.global_attention_bwd(q, k, v, out, lse, dout, scale) -> (dq, dk, dv)`` are opaque to
``torch.compile`` (fake implementations give shapes); ``register_autograd`` connects them. Inside, CUDA inputs
(or ``MEDSEG_KERNELS=triton``) run the Triton kernels of ``global_attn_triton``; anything else runs the torch
reference of ``global_attn_ref``. :func:`global_attention` is the entry point used by ``medseg_kernels.attention``.

On CUDA (nothing forced) :func:`route` picks, per call, the faster of our Triton op and PyTorch's
``scaled_dot_product_attention`` as measured (:data:`MEASURED`): SDPA whenever gradients are needed and for dk = dv,
ours only for inference with dk ≠ dv (position attention), where SDPA needs q/k zero-padded to v's width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medseg_kernels.attention_ref import _check_heads_layout, global_attention_ref
from medseg_kernels.dispatch import TRITON_DTYPES, forced_backend, run_triton, use_triton
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


@dataclass(frozen=True)
class Measured:
    """One measured case: milliseconds of our Triton op and of SDPA, forward and forward + backward."""

    case: str
    same_dims: bool  # dk == dv
    ours_fwd: float
    sdpa_fwd: float
    ours_train: float
    sdpa_train: float


# H100 80GB HBM3, torch 2.11.0+cu130, Triton 3.6.0, bf16, triton.testing.do_bench medians (docs/benchmarks.md,
# "GPU: first checks"); SDPA is cuDNN's at dk = dv, and takes q/k zero-padded to dv = 256 at the DANet shape.
MEASURED = (
    Measured("B1 h4 N=32768 dk=dv=32", True, ours_fwd=2.281, sdpa_fwd=2.207, ours_train=8.895, sdpa_train=7.781),
    Measured("B1 h1 N=4096 dk=32 dv=256 scale 1 (DANet PAM)", False, 0.074, 0.115, 0.963, 0.588),
)


def cuda_choice(same_dims: bool, needs_grad: bool) -> str:
    """``triton`` or ``sdpa``: the faster in the measured case of the same kind (dk = dv or not), forward + backward
    times when gradients are needed, forward times otherwise."""
    m = next(m for m in MEASURED if m.same_dims == same_dims)
    ours, sdpa = (m.ours_train, m.sdpa_train) if needs_grad else (m.ours_fwd, m.sdpa_fwd)
    return "triton" if ours < sdpa else "sdpa"


def route(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """``triton``, ``sdpa`` or ``reference`` for these inputs.

    ``MEDSEG_KERNELS=reference`` forces the reference, ``=triton`` our op wherever it serves the inputs (both as
    before). Otherwise CUDA inputs of a Triton dtype take :func:`cuda_choice` (SDPA where ours does not serve them),
    and everything else (CPU, float64, mixed) the reference.
    """
    forced = forced_backend()
    if forced == "reference":
        return "reference"
    if forced == "triton" or not q.is_cuda:
        return "triton" if triton_supported(q, k, v) else "reference"
    if not all(t.dtype == q.dtype and t.device == q.device and t.dtype in TRITON_DTYPES for t in (k, v)):
        return "reference"
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    choice = cuda_choice(q.shape[-1] == v.shape[-1], needs_grad)
    return "triton" if choice == "triton" and triton_supported(q, k, v) else "sdpa"


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale · q kᵀ) v by ``torch.nn.functional.scaled_dot_product_attention`` (differentiable).

    SDPA's fused kernels take one head dim: q/k (or v) are zero-padded to the wider one, which changes neither q·kᵀ
    nor the kept output columns (the formulation measured in :data:`MEASURED`).
    """
    dk, dv = q.shape[-1], v.shape[-1]
    if dk < dv:
        q, k = F.pad(q, (0, dv - dk)), F.pad(k, (0, dv - dk))
    elif dv < dk:
        v = F.pad(v, (0, dk - dv))
    return F.scaled_dot_product_attention(q, k, v, scale=scale)[..., :dv]


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(scale · q kᵀ) v through :func:`route`: our custom op, SDPA or the differentiable reference."""
    _check_heads_layout(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    how = route(q, k, v)
    if how == "triton":
        return global_attention_fwd(q, k, v, scale)[0]
    if how == "sdpa":
        return sdpa_attention(q, k, v, scale)
    return global_attention_ref(q, k, v, scale)
