"""``medseg::attention_gate``: registered custom op (forward + backward) of the fused additive attention gate.

``torch.ops.medseg.attention_gate_fwd(x, g, w_x, w_g, b, psi, b_psi) -> out`` and
``torch.ops.medseg.attention_gate_bwd(dout, x, g, w_x, w_g, b, psi, b_psi) -> (dx, dg, dw_x, dw_g, db, dpsi, db_psi)``
are opaque to ``torch.compile`` (fake implementations give shapes); ``register_autograd`` connects them. Inside, CUDA
inputs (or ``MEDSEG_KERNELS=triton``) run the Triton kernels of ``gate_triton``; anything else runs the torch
reference of ``gate_ref``. :func:`attention_gate` checks the arguments and dispatches; the public entry point is
``medseg_kernels.gate.attention_gate`` (used by ``medseg.blocks.AttentionGate``).
"""

from __future__ import annotations

import torch

from medseg_kernels.dispatch import run_triton, use_triton
from medseg_kernels.gate_ref import attention_gate_bwd_ref, attention_gate_ref, check_gate_args

Grads = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MAX_WEIGHTS = 32768  # padded F × (Cx + Cg) the Triton kernels take when g is on x's grid, F × Cx when it is coarser
MAX_WEIGHTS_COARSE = 16384  # (fp32 weight tiles sit in shared memory: at these bounds some launch candidate of each
# kernel fits sm_90 and sm_80 with triton 3.6-3.9, checked by tests/kernels/sm90_compile.py; wider gates run the
# reference, and so does a gate whose candidates all fail to fit at launch, see medseg_kernels.launch)


def _p2(n: int) -> int:
    return max(1 << (n - 1).bit_length(), 16)


def triton_supported(x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor) -> bool:
    """Whether the Triton kernels serve these inputs (backend, dtype/device of x and g, channel counts)."""
    weights_ok = all(w.device == x.device and w.is_floating_point() for w in (w_x, w_g))
    same = g.shape[2:] == x.shape[2:]
    width = _p2(w_x.shape[0]) * (_p2(x.shape[1]) + (_p2(g.shape[1]) if same else 0))
    return use_triton(x, g) and weights_ok and width <= (MAX_WEIGHTS if same else MAX_WEIGHTS_COARSE)


@torch.library.custom_op("medseg::attention_gate_fwd", mutates_args=())
def attention_gate_fwd(
    x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor, psi: torch.Tensor,
    b_psi: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    if triton_supported(x, g, w_x, w_g):
        result = run_triton("gate_triton", "forward", x, g, w_x, w_g, b, psi, b_psi)
        if result is not None:
            return result
    return attention_gate_ref(x, g, w_x, w_g, b, psi, b_psi).contiguous()


@attention_gate_fwd.register_fake
def _(
    x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor, psi: torch.Tensor,
    b_psi: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("medseg::attention_gate_bwd", mutates_args=())
def attention_gate_bwd(
    dout: torch.Tensor, x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor,
    psi: torch.Tensor, b_psi: torch.Tensor,
) -> Grads:  # fmt: skip
    if triton_supported(x, g, w_x, w_g) and dout.dtype == x.dtype:
        result = run_triton("gate_triton", "backward", dout, x, g, w_x, w_g, b, psi, b_psi)
        if result is not None:
            return result
    return attention_gate_bwd_ref(dout, x, g, w_x, w_g, b, psi, b_psi)  # type: ignore[return-value]


@attention_gate_bwd.register_fake
def _(
    dout: torch.Tensor, x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor,
    psi: torch.Tensor, b_psi: torch.Tensor,
) -> Grads:  # fmt: skip
    tensors = (x, g, w_x, w_g, b, psi, b_psi)
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in tensors)  # type: ignore[return-value]


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    ctx.save_for_backward(*inputs)


def _backward(ctx, dout):  # type: ignore[no-untyped-def]
    return attention_gate_bwd(dout.contiguous(), *ctx.saved_tensors)


attention_gate_fwd.register_autograd(_backward, setup_context=_setup_context)


def attention_gate(
    x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor, psi: torch.Tensor,
    b_psi: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """The attention gate (see ``medseg_kernels.gate``): the custom op where Triton serves the inputs, else the
    differentiable reference."""
    check_gate_args(x, g, w_x, w_g, b, psi, b_psi)
    if triton_supported(x, g, w_x, w_g):
        return attention_gate_fwd(x, g, w_x, w_g, b, psi, b_psi)
    return attention_gate_ref(x, g, w_x, w_g, b, psi, b_psi)
