"""Reference (pure PyTorch) forward-with-logsumexp and explicit backward of global attention.

These are the CPU / float64 implementations behind the ``medseg::global_attention`` custom op (``global_attn.py``); the
differentiable spec itself is :func:`medseg_kernels.attention_ref.global_attention_ref`. The backward is the
recompute form the Triton kernels implement: ``P = exp(scale·QKᵀ − lse)``, ``dV = Pᵀ dO``, ``dP = dO Vᵀ``,
``dS = P ∘ (dP − rowsum(dO ∘ O))``, ``dQ = scale·dS K``, ``dK = scale·dSᵀ Q``. Half precision computes in float32.
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else computes (and keeps its logsumexp) in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def global_attention_fwd_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, h, N, dv) in v's dtype, lse (B, h, N) in the compute dtype) of softmax(scale·q kᵀ) v."""
    ct = compute_dtype(q.dtype)
    scores = torch.matmul(q.to(ct), k.to(ct).transpose(-1, -2)) * scale  # (B, h, N, N)
    lse = torch.logsumexp(scores, dim=-1)  # (B, h, N)
    out = torch.matmul(torch.exp(scores - lse[..., None]), v.to(ct))
    return out.to(v.dtype), lse


def global_attention_bwd_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dout: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) from the saved logsumexp, recomputing the probabilities."""
    ct = compute_dtype(q.dtype)
    qc, kc, vc, do = q.to(ct), k.to(ct), v.to(ct), dout.to(ct)
    p = torch.exp(torch.matmul(qc, kc.transpose(-1, -2)) * scale - lse.to(ct)[..., None])  # (B, h, N, N)
    dv = torch.matmul(p.transpose(-1, -2), do)
    delta = (do * out.to(ct)).sum(-1, keepdim=True)  # (B, h, N, 1)
    ds = p * (torch.matmul(do, vc.transpose(-1, -2)) - delta)
    dq = torch.matmul(ds, kc) * scale
    dk = torch.matmul(ds.transpose(-1, -2), qc) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
