"""Triton kernels of neighbourhood attention over 1 to 3 spatial axes (NATTEN semantics; spec: ``attention_ref``).

Geometry. Every input is seen as 3D (missing axes have size 1, window 1). With dilation r an axis splits into r
interleaved sub-grids (positions ``sub + r·j``); attention never crosses them, so each sub-grid is a plain
(dilation-1) problem in its own coordinates j ∈ [0, L), L = ⌈(S − sub)/r⌉, where query j sees keys
``[st(j), st(j) + K)`` with ``st(j) = min(max(j − K//2, 0), L − K)`` (window clamped at the borders).

Forward (and dQ). A program takes a box of T_d × T_h × T_w queries of one sub-grid; since st is monotone, their
windows lie in the key box ``[st(j0), st(j_last) + K)`` per axis (T + K − 1 at most), which it visits in chunks of
``BLOCK_K`` keys with an online softmax; the in-window test is arithmetic on coordinates (no mask tensors, no
per-shape setup; memory is linear in voxels). dK/dV: a program takes a box of keys and visits the queries whose
windows can hold them, ``[j_lo, j_hi]`` per axis (the inverse neighbourhood, again at most T + K − 1 wide).
Softmax statistics are fp32 (logsumexp saved, base e); products accumulate in fp32; fp32 inputs use IEEE dots.

Import this module only where triton is importable (``neighborhood.py`` imports it lazily).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from medseg_kernels.launch import Launch, gpu_configs, run
from medseg_kernels.triton_common import LN2_C, LOG2E, LOG2E_C, load_tile, store_tile


@triton.jit
def _start(j, L, K: tl.constexpr):
    """First key (sub-grid coordinates) of the clamped window of query j."""
    return tl.minimum(tl.maximum(j - K // 2, 0), L - K)


@triton.jit
def _axis_tile(slot, S, R, T: tl.constexpr):
    """Sub-grid, its length and the tile's first coordinate for ``slot`` = sub · tiles + tile along one axis."""
    n_tiles = ((S + R - 1) // R + T - 1) // T
    sub = slot // n_tiles
    return sub, (S - sub + R - 1) // R, (slot % n_tiles) * T


@triton.jit
def _key_box(j0, L, K: tl.constexpr, T: tl.constexpr):
    """[lo, hi) of the keys seen by queries j0 .. j0 + T − 1 (clipped to L)."""
    lo = _start(j0, L, K)
    return lo, _start(tl.minimum(j0 + T - 1, L - 1), L, K) + K


@triton.jit
def _query_box(c0, L, K: tl.constexpr, T: tl.constexpr):
    """[lo, hi) of the queries whose windows can hold keys c0 .. c0 + T − 1 (clipped to L)."""
    lo = tl.where(c0 - K + 1 <= 0, 0, c0 - K + 1 + K // 2)
    c1 = tl.minimum(c0 + T - 1, L - 1)
    return lo, tl.where(c1 >= L - K, L, tl.minimum(c1 + K // 2, L - 1) + 1)


@triton.jit
def _unravel(idx, nh, nw):
    return idx // (nh * nw), (idx // nw) % nh, idx % nw


@triton.jit
def _token(jd, jh, jw, sd, sh, sw, SH, SW, RD, RH, RW):
    """Flat token index of sub-grid coordinates (per axis: position = sub + dilation · j)."""
    return ((sd + RD * jd) * SH + (sh + RH * jh)) * SW + (sw + RW * jw)


@triton.jit
def _in_window(st, c, K: tl.constexpr):
    """(queries, keys) mask: key coordinate c in [st, st + K) of each query."""
    return (st[:, None] <= c[None, :]) & (c[None, :] < st[:, None] + K)


@triton.jit
def _program_tile(
    SD, SH, SW, RD, RH, RW, NSH, NSW,
    TD: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
):  # fmt: skip
    """Per axis: sub-grid, length and first coordinate of this program's tile (grid axis 0 enumerates tiles)."""
    pid = tl.program_id(0)
    sd, ld, d0 = _axis_tile(pid // (NSH * NSW), SD, RD, TD)
    sh, lh, h0 = _axis_tile((pid // NSW) % NSH, SH, RH, TH)
    sw, lw, w0 = _axis_tile(pid % NSW, SW, RW, TW)
    return sd, sh, sw, ld, lh, lw, d0, h0, w0


@triton.jit
def _fwd_kernel(
    Q, K, V, Out, LSE, DO, DELTA, DQ, qk_scale, scale, N, SD, SH, SW, RD, RH, RW, NSH, NSW,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, TD: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, D_P: tl.constexpr, DV_P: tl.constexpr, BLOCK_K: tl.constexpr,
    PREC: tl.constexpr, GRAD_Q: tl.constexpr,
):  # fmt: skip
    """Forward (out, lse) or, with GRAD_Q, the dQ pass (same traversal, probabilities from the saved lse)."""
    bh = tl.program_id(1).to(tl.int64)
    sd, sh, sw, ld, lh, lw, d0, h0, w0 = _program_tile(SD, SH, SW, RD, RH, RW, NSH, NSW, TD, TH, TW)
    md, mh, mw = _unravel(tl.arange(0, TD * TH * TW), TH, TW)
    jd, jh, jw = d0 + md, h0 + mh, w0 + mw
    q_ok = (jd < ld) & (jh < lh) & (jw < lw)
    q_tok = _token(jd, jh, jw, sd, sh, sw, SH, SW, RD, RH, RW)
    std, sth, stw = _start(jd, ld, KD), _start(jh, lh, KH), _start(jw, lw, KW)
    offs_d, offs_v = tl.arange(0, D_P), tl.arange(0, DV_P)
    d_ok, v_ok = offs_d < D, offs_v < DV
    q = load_tile(Q + bh * N * D, q_tok, offs_d, D, q_ok, d_ok)
    lod, hid = _key_box(d0, ld, KD, TD)
    loh, hih = _key_box(h0, lh, KH, TH)
    low, hiw = _key_box(w0, lw, KW, TW)
    nh, nw = hih - loh, hiw - low
    if GRAD_Q:
        lse2 = tl.load(LSE + bh * N + q_tok, mask=q_ok, other=0.0) * LOG2E_C
        delta = tl.load(DELTA + bh * N + q_tok, mask=q_ok, other=0.0)
        do = load_tile(DO + bh * N * DV, q_tok, offs_v, DV, q_ok, v_ok)
        acc = tl.zeros([TD * TH * TW, D_P], tl.float32)
    else:
        m_i = tl.full([TD * TH * TW], float("-inf"), tl.float32)
        l_i = tl.zeros([TD * TH * TW], tl.float32)
        acc = tl.zeros([TD * TH * TW, DV_P], tl.float32)
    for start in range(0, (hid - lod) * nh * nw, BLOCK_K):
        idx = start + tl.arange(0, BLOCK_K)
        e_ok = idx < (hid - lod) * nh * nw
        ed, eh, ew = _unravel(idx, nh, nw)
        cd, ch, cw = lod + ed, loh + eh, low + ew
        k_tok = _token(cd, ch, cw, sd, sh, sw, SH, SW, RD, RH, RW)
        ok = _in_window(std, cd, KD) & _in_window(sth, ch, KH) & _in_window(stw, cw, KW) & e_ok[None, :]
        k = load_tile(K + bh * N * D, k_tok, offs_d, D, e_ok, d_ok)
        v = load_tile(V + bh * N * DV, k_tok, offs_v, DV, e_ok, v_ok)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale  # (queries, keys), log2 units
        if GRAD_Q:
            p = tl.where(ok, tl.exp2(s - lse2[:, None]), 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=PREC)
            acc += tl.dot((p * (dp - delta[:, None])).to(k.dtype), k, input_precision=PREC)
        else:
            s = tl.where(ok, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows without a key in this chunk
            corr = tl.exp2(m_i - m_safe)
            p = tl.exp2(s - m_safe[:, None])
            l_i = l_i * corr + tl.sum(p, 1)
            acc = acc * corr[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
            m_i = m_new
    if GRAD_Q:
        store_tile(DQ + bh * N * D, q_tok, offs_d, D, q_ok, d_ok, acc * scale)
    else:
        l_i = tl.where(l_i == 0.0, 1.0, l_i)
        store_tile(Out + bh * N * DV, q_tok, offs_v, DV, q_ok, v_ok, acc / l_i[:, None])
        tl.store(LSE + bh * N + q_tok, (m_i + tl.log2(l_i)) * LN2_C, mask=q_ok)


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV_, qk_scale, scale, N, SD, SH, SW, RD, RH, RW, NSH, NSW,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, TD: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, D_P: tl.constexpr, DV_P: tl.constexpr, BLOCK_Q: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """dK, dV of a box of keys, visiting the queries of its inverse neighbourhood."""
    bh = tl.program_id(1).to(tl.int64)
    sd, sh, sw, ld, lh, lw, d0, h0, w0 = _program_tile(SD, SH, SW, RD, RH, RW, NSH, NSW, TD, TH, TW)
    md, mh, mw = _unravel(tl.arange(0, TD * TH * TW), TH, TW)
    cd, ch, cw = d0 + md, h0 + mh, w0 + mw
    k_ok = (cd < ld) & (ch < lh) & (cw < lw)
    k_tok = _token(cd, ch, cw, sd, sh, sw, SH, SW, RD, RH, RW)
    offs_d, offs_v = tl.arange(0, D_P), tl.arange(0, DV_P)
    d_ok, v_ok = offs_d < D, offs_v < DV
    k = load_tile(K + bh * N * D, k_tok, offs_d, D, k_ok, d_ok)
    v = load_tile(V + bh * N * DV, k_tok, offs_v, DV, k_ok, v_ok)
    lod, hid = _query_box(d0, ld, KD, TD)
    loh, hih = _query_box(h0, lh, KH, TH)
    low, hiw = _query_box(w0, lw, KW, TW)
    nh, nw = hih - loh, hiw - low
    dk_acc = tl.zeros([TD * TH * TW, D_P], tl.float32)
    dv_acc = tl.zeros([TD * TH * TW, DV_P], tl.float32)
    for start in range(0, (hid - lod) * nh * nw, BLOCK_Q):
        idx = start + tl.arange(0, BLOCK_Q)
        e_ok = idx < (hid - lod) * nh * nw
        ed, eh, ew = _unravel(idx, nh, nw)
        jd, jh, jw = lod + ed, loh + eh, low + ew
        q_tok = _token(jd, jh, jw, sd, sh, sw, SH, SW, RD, RH, RW)
        ok_t = _in_window(_start(jd, ld, KD), cd, KD) & _in_window(_start(jh, lh, KH), ch, KH)
        ok_t = tl.trans(ok_t & _in_window(_start(jw, lw, KW), cw, KW) & e_ok[:, None])  # (keys, queries)
        q = load_tile(Q + bh * N * D, q_tok, offs_d, D, e_ok, d_ok)
        do = load_tile(DO + bh * N * DV, q_tok, offs_v, DV, e_ok, v_ok)
        lse2 = tl.load(LSE + bh * N + q_tok, mask=e_ok, other=0.0) * LOG2E_C
        delta = tl.load(DELTA + bh * N + q_tok, mask=e_ok, other=0.0)
        p_t = tl.where(ok_t, tl.exp2(tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale - lse2[None, :]), 0.0)
        dv_acc += tl.dot(p_t.to(do.dtype), do, input_precision=PREC)
        ds_t = p_t * (tl.dot(v, tl.trans(do), input_precision=PREC) - delta[None, :])
        dk_acc += tl.dot(ds_t.to(q.dtype), q, input_precision=PREC)
    store_tile(DK + bh * N * D, k_tok, offs_d, D, k_ok, d_ok, dk_acc * scale)
    store_tile(DV_ + bh * N * DV, k_tok, offs_v, DV, k_ok, v_ok, dv_acc)


def candidates(kernel: str, window: tuple[int, ...], d: int, dv: int, dtype: torch.dtype, gpu: bool) -> list[Launch]:
    """Launch configurations of ``fwd``, ``dq`` or ``dkdv``, preferred first (``launch.run`` takes the first that fits).

    GPU: tiles of 128 queries (64 when a head dim exceeds 64, or in fp32), shaped 4×4×8 / 8×16 / 128 by the number of
    axes, key (query) chunks of 64, 2 stages; then 1 stage, the smaller tile, chunks of 32. The interpreter takes the
    first configuration."""
    ndim = len(window)
    small = max(d, dv) > 64 or (gpu and dtype == torch.float32)
    tiles = {3: ((2, 4, 8), (4, 4, 8)), 2: ((1, 8, 8), (1, 8, 16)), 1: ((1, 1, 64), (1, 1, 128))}[ndim]
    ker = (1,) * (3 - ndim) + tuple(window)
    base = {
        "KD": ker[0], "KH": ker[1], "KW": ker[2], "D": d, "DV": dv, "D_P": max(triton.next_power_of_2(d), 16),
        "DV_P": max(triton.next_power_of_2(dv), 16), "PREC": "ieee" if dtype == torch.float32 else "tf32",
    }  # fmt: skip
    chunk, extra = ("BLOCK_Q", {}) if kernel == "dkdv" else ("BLOCK_K", {"GRAD_Q": kernel == "dq"})
    options = [(tiles[0 if small else 1], 64, 2), (tiles[0 if small else 1], 64, 1), (tiles[0], 64, 1)]
    options += [(tiles[0], 32, 1)]
    out: list[Launch] = []
    for (td, th, tw), block, stages in dict.fromkeys(options):
        consts = {"TD": td, "TH": th, "TW": tw, **base, chunk: block, **extra}
        out.append(Launch.of(consts, 4, stages) if gpu else Launch.of(consts))
    return out[:1] if not gpu else out


def _geometry(shape: torch.Size, dilation: tuple[int, ...], launch: Launch) -> tuple[tuple, int]:
    """Sizes and dilations (padded to 3 axes), slots per axis, and the number of query tiles."""
    pad = 3 - len(dilation)
    sizes, dil = (1,) * pad + tuple(shape[2:-1]), (1,) * pad + dilation
    tiles = (launch["TD"], launch["TH"], launch["TW"])
    slots = [r * triton.cdiv(triton.cdiv(s, r), t) for s, r, t in zip(sizes, dil, tiles, strict=True)]
    return (*sizes, *dil, slots[1], slots[2]), slots[0] * slots[1] * slots[2]


def forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: tuple[int, ...], dilation: tuple[int, ...], scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, h, *S, dv), lse (B, h, *S) fp32)."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    n, bh = q[0, 0, ..., 0].numel(), q.shape[0] * q.shape[1]
    out, lse = torch.empty_like(v), torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)

    def bind(c: Launch) -> tuple:
        geo, n_tiles = _geometry(q.shape, dilation, c)
        return (n_tiles, bh), (q, k, v, out, lse, v, lse, q, scale * LOG2E, scale, n, *geo)

    cands = candidates("fwd", kernel, q.shape[-1], v.shape[-1], q.dtype, gpu_configs(q))
    run("na.fwd", _fwd_kernel, cands, bind, q)
    return out, lse


def backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, dout: torch.Tensor,
    kernel: tuple[int, ...], dilation: tuple[int, ...], scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(dq, dk, dv) recomputing the probabilities from the saved logsumexp."""
    q, k, v, dout, lse = q.contiguous(), k.contiguous(), v.contiguous(), dout.contiguous(), lse.contiguous()
    n, bh = q[0, 0, ..., 0].numel(), q.shape[0] * q.shape[1]
    delta = (dout.float() * out.float()).sum(-1).contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dims = (kernel, q.shape[-1], v.shape[-1], q.dtype, gpu_configs(q))

    def bind_dq(c: Launch) -> tuple:
        geo, n_tiles = _geometry(q.shape, dilation, c)
        return (n_tiles, bh), (q, k, v, out, lse, dout, delta, dq, scale * LOG2E, scale, n, *geo)

    def bind_dkdv(c: Launch) -> tuple:
        geo, n_tiles = _geometry(q.shape, dilation, c)
        return (n_tiles, bh), (q, k, v, dout, lse, delta, dk, dv, scale * LOG2E, scale, n, *geo)

    run("na.dq", _fwd_kernel, candidates("dq", *dims), bind_dq, q)
    run("na.dkdv", _bwd_dkdv_kernel, candidates("dkdv", *dims), bind_dkdv, q)
    return dq, dk, dv
