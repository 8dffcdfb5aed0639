"""Triton kernels of global attention (flash style) with q/k head dim ≠ v head dim (position attention).

Forward: online softmax over key blocks, nothing of size N×N in memory; it saves the logsumexp (natural log, fp32).
Backward: recompute-based (FlashAttention-2): ``delta = rowsum(dO ∘ O)``, one kernel accumulating dK, dV per key
block over all query blocks, one accumulating dQ per query block over all key blocks (no atomics).
Wide values (dv > ``BLOCK_DV``) are split into chunks over the third grid axis; the softmax statistics are
recomputed per chunk (cheap: dk is small in PAM). All products accumulate in fp32; fp32 inputs use IEEE dots.

Import this module only where triton is importable (``global_attn.py`` imports it lazily).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from medseg_kernels.launch import Launch, gpu_configs, run
from medseg_kernels.triton_common import LN2_C, LOG2E, LOG2E_C, load_tile, store_tile


@triton.jit
def _fwd_kernel(
    Q, K, V, Out, LSE, N, qk_scale,
    DK: tl.constexpr, DV: tl.constexpr, DK_P: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid_m, bh, pid_c = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, DK_P)
    offs_v = pid_c * BLOCK_DV + tl.arange(0, BLOCK_DV)
    m_ok, k_ok, v_ok = offs_m < N, offs_k < DK, offs_v < DV
    q = load_tile(Q + bh * N * DK, offs_m, offs_k, DK, m_ok, k_ok)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        k = load_tile(K + bh * N * DK, offs_n, offs_k, DK, n_ok, k_ok)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        corr = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * corr + tl.sum(p, 1)
        v = load_tile(V + bh * N * DV, offs_n, offs_v, DV, n_ok, v_ok)
        acc = acc * corr[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    acc = acc / l_i[:, None]
    store_tile(Out + bh * N * DV, offs_m, offs_v, DV, m_ok, v_ok, acc)
    if pid_c == 0:
        tl.store(LSE + bh * N + offs_m, (m_i + tl.log2(l_i)) * LN2_C, mask=m_ok)


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DKo, DVo, N, qk_scale, scale,
    DK: tl.constexpr, DV: tl.constexpr, DK_P: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid_n, bh, pid_c = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, DK_P)
    offs_v = pid_c * BLOCK_DV + tl.arange(0, BLOCK_DV)
    offs_c = tl.arange(0, BLOCK_DV)
    n_ok, k_ok, v_ok = offs_n < N, offs_k < DK, offs_v < DV
    k = load_tile(K + bh * N * DK, offs_n, offs_k, DK, n_ok, k_ok)
    dk_acc = tl.zeros([BLOCK_N, DK_P], tl.float32)
    dv_acc = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for start in range(0, N, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        m_ok = offs_m < N
        q = load_tile(Q + bh * N * DK, offs_m, offs_k, DK, m_ok, k_ok)
        lse2 = tl.load(LSE + bh * N + offs_m, mask=m_ok, other=float("inf")) * LOG2E_C
        p_t = tl.exp2(tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale - lse2[None, :])  # (BLOCK_N, BLOCK_M)
        do = load_tile(DO + bh * N * DV, offs_m, offs_v, DV, m_ok, v_ok)
        dv_acc += tl.dot(p_t.to(do.dtype), do, input_precision=PREC)
        if pid_c == 0:  # the first value chunk also owns dK, which needs dP summed over every value chunk
            dp_t = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
            for c in range(0, DV, BLOCK_DV):
                cm = (c + offs_c) < DV
                vc = load_tile(V + bh * N * DV, offs_n, c + offs_c, DV, n_ok, cm)
                doc = load_tile(DO + bh * N * DV, offs_m, c + offs_c, DV, m_ok, cm)
                dp_t += tl.dot(vc, tl.trans(doc), input_precision=PREC)
            delta = tl.load(DELTA + bh * N + offs_m, mask=m_ok, other=0.0)
            ds_t = p_t * (dp_t - delta[None, :])
            dk_acc += tl.dot(ds_t.to(q.dtype), q, input_precision=PREC)
    store_tile(DVo + bh * N * DV, offs_n, offs_v, DV, n_ok, v_ok, dv_acc)
    if pid_c == 0:
        store_tile(DKo + bh * N * DK, offs_n, offs_k, DK, n_ok, k_ok, dk_acc * scale)


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQo, N, qk_scale, scale,
    DK: tl.constexpr, DV: tl.constexpr, DK_P: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid_m, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, DK_P)
    offs_c = tl.arange(0, BLOCK_DV)
    m_ok, k_ok = offs_m < N, offs_k < DK
    q = load_tile(Q + bh * N * DK, offs_m, offs_k, DK, m_ok, k_ok)
    lse2 = tl.load(LSE + bh * N + offs_m, mask=m_ok, other=float("inf")) * LOG2E_C
    delta = tl.load(DELTA + bh * N + offs_m, mask=m_ok, other=0.0)
    dq_acc = tl.zeros([BLOCK_M, DK_P], tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        k = load_tile(K + bh * N * DK, offs_n, offs_k, DK, n_ok, k_ok)
        p = tl.exp2(tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale - lse2[:, None])
        p = tl.where(n_ok[None, :], p, 0.0)
        dp = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for c in range(0, DV, BLOCK_DV):
            cm = (c + offs_c) < DV
            doc = load_tile(DO + bh * N * DV, offs_m, c + offs_c, DV, m_ok, cm)
            vc = load_tile(V + bh * N * DV, offs_n, c + offs_c, DV, n_ok, cm)
            dp += tl.dot(doc, tl.trans(vc), input_precision=PREC)
        ds = p * (dp - delta[:, None])
        dq_acc += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
    store_tile(DQo + bh * N * DK, offs_m, offs_k, DK, m_ok, k_ok, dq_acc * scale)


def candidates(dk: int, dv: int, dtype: torch.dtype, gpu: bool) -> list[Launch]:
    """Launch configurations of each kernel (forward, dK/dV, dQ), preferred first (``launch.run`` takes, per kernel,
    the first that fits the device).

    GPU: value chunks of ≤ 128 (64 in fp32), 128-query tiles where the head dims are ≤ 64, 64-key tiles, 2 stages;
    then smaller tiles, then 1 stage, then 64-wide value chunks. The interpreter takes one configuration (chunks of 64).
    """
    wide = 128 if gpu and dtype != torch.float32 else 64
    block_dv = min(max(triton.next_power_of_2(dv), 16), wide)
    base = {
        "DK": dk, "DV": dv, "DK_P": max(triton.next_power_of_2(dk), 16),
        "PREC": "ieee" if dtype == torch.float32 else "tf32",
    }  # fmt: skip
    block_m = 64 if max(dk, block_dv) > 64 or wide == 64 else 128
    if not gpu:
        return [Launch.of({**base, "BLOCK_DV": block_dv, "BLOCK_M": block_m, "BLOCK_N": 64})]
    out: list[Launch] = []
    for chunk in sorted({block_dv, min(block_dv, 64)}, reverse=True):
        for stages in (2, 1):
            for bm, bn in dict.fromkeys([(block_m, 64), (64, 64), (64, 32), (32, 32)]):
                out.append(Launch.of({**base, "BLOCK_DV": chunk, "BLOCK_M": bm, "BLOCK_N": bn}, 4, stages))
    return out


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, h, N, dv), lse (B, h, N) fp32) of softmax(scale · q kᵀ) v."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    b, h, n, dk = q.shape
    dv = v.shape[-1]
    out = torch.empty(b, h, n, dv, device=q.device, dtype=v.dtype)
    lse = torch.empty(b, h, n, device=q.device, dtype=torch.float32)

    def bind(c: Launch) -> tuple:
        grid = (triton.cdiv(n, c["BLOCK_M"]), b * h, triton.cdiv(dv, c["BLOCK_DV"]))
        return grid, (q, k, v, out, lse, n, scale * LOG2E)

    run("global.fwd", _fwd_kernel, candidates(dk, dv, q.dtype, gpu_configs(q)), bind, q)
    return out, lse


def backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dout: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) recomputing the probabilities from the saved logsumexp."""
    q, k, v, dout, lse = q.contiguous(), k.contiguous(), v.contiguous(), dout.contiguous(), lse.contiguous()
    b, h, n, d_k = q.shape
    d_v = v.shape[-1]
    cands = candidates(d_k, d_v, q.dtype, gpu_configs(q))
    delta = (dout.float() * out.float()).sum(-1).contiguous()  # (B, h, N)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = (q, k, v, dout, lse, delta)

    def bind_dkdv(c: Launch) -> tuple:
        grid = (triton.cdiv(n, c["BLOCK_N"]), b * h, triton.cdiv(d_v, c["BLOCK_DV"]))
        return grid, (*common, dk, dv, n, scale * LOG2E, scale)

    def bind_dq(c: Launch) -> tuple:
        return (triton.cdiv(n, c["BLOCK_M"]), b * h), (*common, dq, n, scale * LOG2E, scale)

    run("global.dkdv", _bwd_dkdv_kernel, cands, bind_dkdv, q)
    run("global.dq", _bwd_dq_kernel, cands, bind_dq, q)
    return dq, dk, dv
