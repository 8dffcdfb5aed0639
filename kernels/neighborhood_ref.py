"""Reference (pure PyTorch) forward-with-logsumexp and explicit backward of neighbourhood attention.

These are the CPU / float64 implementations behind the ``medseg::neighborhood_attention`` custom op
(``neighborhood.py``); the differentiable spec is :func:`medseg_kernels.attention_ref.neighborhood_attention_ref`
(windows by :func:`~medseg_kernels.attention_ref.window_index`). Gathered form: memory ~ N · ∏ kernel · d.
"""

from __future__ import annotations

import torch

from medseg_kernels.attention_ref import window_index
from medseg_kernels.global_attn_ref import compute_dtype


def _gather(q: torch.Tensor, t: torch.Tensor, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> torch.Tensor:
    """(B, h, N, K, d) windows of t for every query of q's grid."""
    index = window_index(tuple(q.shape[2:-1]), kernel, dilation, q.device)  # (N, K)
    return t.reshape(t.shape[0], t.shape[1], -1, t.shape[-1])[:, :, index]


def neighborhood_attention_fwd_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: tuple[int, ...], dilation: tuple[int, ...], scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, h, *S, dv) in v's dtype, lse (B, h, *S) in the compute dtype)."""
    ct = compute_dtype(q.dtype)
    qf = q.to(ct).reshape(q.shape[0], q.shape[1], -1, q.shape[-1])
    scores = torch.einsum("bhnd,bhnkd->bhnk", qf, _gather(q, k.to(ct), kernel, dilation)) * scale
    lse = torch.logsumexp(scores, -1)
    out = torch.einsum("bhnk,bhnkd->bhnd", torch.exp(scores - lse[..., None]), _gather(q, v.to(ct), kernel, dilation))
    return out.reshape(v.shape).to(v.dtype), lse.reshape(q.shape[:-1])


def neighborhood_attention_bwd_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, dout: torch.Tensor,
    kernel: tuple[int, ...], dilation: tuple[int, ...], scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(dq, dk, dv): P from the saved lse, dS = P ∘ (dO·Vᵀ − rowsum(dO ∘ O)), window gradients scattered back."""
    ct = compute_dtype(q.dtype)
    b, h, d, dv_ = q.shape[0], q.shape[1], q.shape[-1], v.shape[-1]
    index = window_index(tuple(q.shape[2:-1]), kernel, dilation, q.device).reshape(-1)  # (N·K,)
    qf, do = q.to(ct).reshape(b, h, -1, d), dout.to(ct).reshape(b, h, -1, dv_)
    kg, vg = _gather(q, k.to(ct), kernel, dilation), _gather(q, v.to(ct), kernel, dilation)
    p = torch.exp(torch.einsum("bhnd,bhnkd->bhnk", qf, kg) * scale - lse.to(ct).reshape(b, h, -1, 1))
    delta = (do * out.to(ct).reshape(b, h, -1, dv_)).sum(-1, keepdim=True)
    ds = p * (torch.einsum("bhnd,bhnkd->bhnk", do, vg) - delta)  # (B, h, N, K)
    dq = torch.einsum("bhnk,bhnkd->bhnd", ds, kg) * scale
    dkg = (ds[..., None] * qf[:, :, :, None, :] * scale).reshape(b, h, -1, d)
    dvg = (p[..., None] * do[:, :, :, None, :]).reshape(b, h, -1, dv_)
    dk = torch.zeros_like(qf).index_add_(2, index, dkg)
    dv = torch.zeros(b, h, qf.shape[2], dv_, dtype=ct, device=q.device).index_add_(2, index, dvg)
    return dq.reshape(q.shape).to(q.dtype), dk.reshape(k.shape).to(k.dtype), dv.reshape(v.shape).to(v.dtype)
