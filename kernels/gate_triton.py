"""Triton kernels of the fused additive attention gate (spec and formulas: ``gate_ref.py``).

Forward: one pass over x. Each program takes a tile of ``BLOCK_V`` voxels with all channels, forms W_x x with one
``tl.dot``, adds the projected gating signal, applies relu, ψ, sigmoid and writes x·α. The gating signal is either
projected in the kernel (``SAME``: g on x's grid) or, for a coarser g, projected on g's grid first (a small GEMM on
1/2ᵈ of the voxels, fp32) and linearly interpolated in the kernel from its 2ᵈ neighbours (align_corners=False).
Backward: one pass over x and dout recomputing z and α; dx (and dg when ``SAME``) are written per tile; the weight
gradients accumulate in registers over the tiles a persistent program visits and are summed across programs on the
host; for a coarser g, dz is scattered into dφ on g's grid with fp32 atomics (weights of the interpolation), then
dW_g = dφ gᵀ and dg = W_gᵀ dφ are GEMMs on g's grid (the atomics make dg and dW_g nondeterministic in their
last bits). All dots take fp32 operands (half inputs upcast, weights kept fp32) and accumulate in fp32: TF32
tensor cores for half inputs (10-bit mantissa, finer than bf16's 7), IEEE for fp32 inputs; the op is memory-bound.
With TF32, z is off by up to ~4e-4 max|z| (the rounded weights), so where z lies that close to 0 relu's mask can
differ from an exact computation's: another valid subgradient there (tests/kernels/test_gate_kernel.py, KINK).

Import this module only where triton is importable (``gate.py`` imports it lazily).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from medseg_kernels.launch import Launch, gpu_configs, run
from medseg_kernels.triton_common import load_tile, store_tile


@triton.jit
def _axis(i, n_in, scale):
    """Source indices and weights along one axis (align_corners=False): i0, i1, 1 − λ, λ."""
    src = tl.maximum((i.to(tl.float32) + 0.5) * scale - 0.5, 0.0)
    i0 = src.to(tl.int32)  # src ≥ 0: truncation is floor
    lam = src - i0.to(tl.float32)
    return i0, tl.minimum(i0 + 1, n_in - 1), 1.0 - lam, lam


@triton.jit
def _corners(offs_v, H, W, Dg, Hg, Wg, sd, sh, sw, c: tl.constexpr):
    """Flat index on g's grid and weight of corner ``c`` (bits d, h, w) for each fine voxel."""
    w, h, d = offs_v % W, (offs_v // W) % H, offs_v // (H * W)
    d0, d1, ld0, ld1 = _axis(d, Dg, sd)
    h0, h1, lh0, lh1 = _axis(h, Hg, sh)
    w0, w1, lw0, lw1 = _axis(w, Wg, sw)
    if (c >> 2) & 1:
        d0, ld0 = d1, ld1
    if (c >> 1) & 1:
        h0, lh0 = h1, lh1
    if c & 1:
        w0, lw0 = w1, lw1
    return (d0 * Hg + h0) * Wg + w0, ld0 * lh0 * lw0


@triton.jit
def _pre_activation(
    X, G, PHI, WX, WG, Bv, b, offs_v, v_ok, N, H, W, Dg, Hg, Wg, sd, sh, sw,
    CX: tl.constexpr, CG: tl.constexpr, F: tl.constexpr, CX_P: tl.constexpr, CG_P: tl.constexpr,
    F_P: tl.constexpr, SAME: tl.constexpr, CORNERS: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """x tile (CX_P, BLOCK_V), z = W_x x + up(φ) (F_P, BLOCK_V) fp32 and (for SAME) the g tile."""
    offs_c, offs_g, offs_f = tl.arange(0, CX_P), tl.arange(0, CG_P), tl.arange(0, F_P)
    c_ok, g_ok, f_ok = offs_c < CX, offs_g < CG, offs_f < F
    x = load_tile(X + b * CX * N, offs_c, offs_v, N, c_ok, v_ok)
    z = tl.dot(load_tile(WX, offs_f, offs_c, CX, f_ok, c_ok), x.to(tl.float32), input_precision=PREC)
    if SAME:
        g = load_tile(G + b * CG * N, offs_g, offs_v, N, g_ok, v_ok)
        z += tl.dot(load_tile(WG, offs_f, offs_g, CG, f_ok, g_ok), g.to(tl.float32), input_precision=PREC)
        z += tl.load(Bv + offs_f, mask=f_ok, other=0.0)[:, None]
    else:
        g = x  # unused
        ng = Dg * Hg * Wg
        for c in tl.static_range(CORNERS):
            idx, wt = _corners(offs_v, H, W, Dg, Hg, Wg, sd, sh, sw, c)
            z += wt[None, :] * load_tile(PHI + b * F * ng, offs_f, idx, ng, f_ok, v_ok)
    return x, g, z


@triton.jit
def _weights(W, rows, cols, ld, rmask, cmask, held, HOLD: tl.constexpr):
    """A weight tile: ``held`` (loaded once per program) or, without ``HOLD``, loaded again from global memory."""
    if HOLD:
        return held
    else:
        return load_tile(W, rows, cols, ld, rmask, cmask)


@triton.jit
def _gate_fwd_kernel(
    X, G, PHI, WX, WG, Bv, PSI, BPSI, OUT, N, H, W, Dg, Hg, Wg, sd, sh, sw,
    CX: tl.constexpr, CG: tl.constexpr, F: tl.constexpr, CX_P: tl.constexpr, CG_P: tl.constexpr,
    F_P: tl.constexpr, SAME: tl.constexpr, CORNERS: tl.constexpr, PREC: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(1).to(tl.int64)
    offs_v = tl.program_id(0) * BLOCK_V + tl.arange(0, BLOCK_V)
    v_ok = offs_v < N
    x, g, z = _pre_activation(
        X, G, PHI, WX, WG, Bv, b, offs_v, v_ok, N, H, W, Dg, Hg, Wg, sd, sh, sw,
        CX, CG, F, CX_P, CG_P, F_P, SAME, CORNERS, PREC,
    )  # fmt: skip
    offs_f = tl.arange(0, F_P)
    psi = tl.load(PSI + offs_f, mask=offs_f < F, other=0.0)
    alpha = tl.sigmoid(tl.sum(psi[:, None] * tl.maximum(z, 0.0), 0) + tl.load(BPSI))
    offs_c = tl.arange(0, CX_P)
    store_tile(OUT + b * CX * N, offs_c, offs_v, N, offs_c < CX, v_ok, x.to(tl.float32) * alpha[None, :])


@triton.jit
def _gate_bwd_kernel(
    DOUT, X, G, PHI, WX, WG, Bv, PSI, BPSI, DX, DG, DPHI, DWX_P, DWG_P, DB_P, DPSI_P, DBPSI_P,
    N, H, W, Dg, Hg, Wg, sd, sh, sw, n_tiles, tiles_per_b,
    CX: tl.constexpr, CG: tl.constexpr, F: tl.constexpr, CX_P: tl.constexpr, CG_P: tl.constexpr,
    F_P: tl.constexpr, SAME: tl.constexpr, CORNERS: tl.constexpr, PREC: tl.constexpr, BLOCK_V: tl.constexpr,
    HOLD_W: tl.constexpr,
):  # fmt: skip
    pid, n_prog = tl.program_id(0), tl.num_programs(0)
    offs_c, offs_g, offs_f = tl.arange(0, CX_P), tl.arange(0, CG_P), tl.arange(0, F_P)
    c_ok, g_ok, f_ok = offs_c < CX, offs_g < CG, offs_f < F
    wx = load_tile(WX, offs_f, offs_c, CX, f_ok, c_ok)  # (F_P, CX_P) fp32; held across tiles with HOLD_W
    wg = load_tile(WG, offs_f, offs_g, CG, f_ok, g_ok)  # (F_P, CG_P) fp32; only used when SAME
    psi = tl.load(PSI + offs_f, mask=f_ok, other=0.0)
    b_psi = tl.load(BPSI)
    acc_wx = tl.zeros([F_P, CX_P], tl.float32)
    acc_wg = tl.zeros([F_P, CG_P], tl.float32)
    acc_b = tl.zeros([F_P], tl.float32)
    acc_psi = tl.zeros([F_P], tl.float32)
    acc_bpsi = tl.zeros([BLOCK_V], tl.float32)
    for t in range(pid, n_tiles, n_prog):
        b = (t // tiles_per_b).to(tl.int64)
        offs_v = (t % tiles_per_b) * BLOCK_V + tl.arange(0, BLOCK_V)
        v_ok = offs_v < N
        x, g, z = _pre_activation(
            X, G, PHI, WX, WG, Bv, b, offs_v, v_ok, N, H, W, Dg, Hg, Wg, sd, sh, sw,
            CX, CG, F, CX_P, CG_P, F_P, SAME, CORNERS, PREC,
        )  # fmt: skip
        r = tl.maximum(z, 0.0)
        s = tl.sum(psi[:, None] * r, 0) + b_psi
        alpha = tl.sigmoid(s)
        do = load_tile(DOUT + b * CX * N, offs_c, offs_v, N, c_ok, v_ok)
        ds = tl.sum(do.to(tl.float32) * x.to(tl.float32), 0) * alpha * tl.sigmoid(-s)  # 1 − α without cancellation
        ds = tl.where(v_ok, ds, 0.0)
        acc_bpsi += ds
        acc_psi += tl.sum(r * ds[None, :], 1)
        dz = tl.where(z > 0.0, psi[:, None] * ds[None, :], 0.0)  # (F_P, BLOCK_V)
        acc_b += tl.sum(dz, 1)
        dx = do.to(tl.float32) * alpha[None, :] + tl.dot(
            tl.trans(_weights(WX, offs_f, offs_c, CX, f_ok, c_ok, wx, HOLD_W)), dz, input_precision=PREC
        )
        store_tile(DX + b * CX * N, offs_c, offs_v, N, c_ok, v_ok, dx)
        acc_wx += tl.dot(dz, tl.trans(x.to(tl.float32)), input_precision=PREC)
        if SAME:
            wg_t = tl.trans(_weights(WG, offs_f, offs_g, CG, f_ok, g_ok, wg, HOLD_W))
            store_tile(DG + b * CG * N, offs_g, offs_v, N, g_ok, v_ok, tl.dot(wg_t, dz, input_precision=PREC))
            acc_wg += tl.dot(dz, tl.trans(g.to(tl.float32)), input_precision=PREC)
        else:
            ng = Dg * Hg * Wg
            for c in tl.static_range(CORNERS):
                idx, wt = _corners(offs_v, H, W, Dg, Hg, Wg, sd, sh, sw, c)
                ptr = DPHI + b * F * ng + offs_f[:, None] * ng + idx[None, :]
                tl.atomic_add(ptr, dz * wt[None, :], mask=f_ok[:, None] & v_ok[None, :])
    store_tile(DWX_P + pid * F * CX, offs_f, offs_c, CX, f_ok, c_ok, acc_wx)
    if SAME:
        store_tile(DWG_P + pid * F * CG, offs_f, offs_g, CG, f_ok, g_ok, acc_wg)
    tl.store(DB_P + pid * F + offs_f, acc_b, mask=f_ok)
    tl.store(DPSI_P + pid * F + offs_f, acc_psi, mask=f_ok)
    tl.store(DBPSI_P + pid, tl.sum(acc_bpsi, 0))


def _p2(n: int) -> int:
    return max(triton.next_power_of_2(n), 16)


def candidates(
    cx: int, cg: int, f: int, same: bool, ndim: int, dtype: torch.dtype, gpu: bool, backward: bool
) -> list[Launch]:
    """Launch configurations of the forward or backward kernel, preferred first (``launch.run`` takes the first that
    fits the device). GPU: voxel tiles holding about 4K (forward) / 2K (backward) fp32 elements of the widest operand,
    halved down to 16; the forward pipelined (2 stages, then 1), the backward unpipelined with its weight tiles held
    across tiles, then reloaded per tile (less shared memory, more L2 traffic). The CPU interpreter takes one big tile.
    """
    cx_p, cg_p, f_p = _p2(cx), _p2(cg), _p2(f)
    consts = {
        "CX": cx, "CG": cg, "F": f, "CX_P": cx_p, "CG_P": cg_p, "F_P": f_p, "SAME": same, "CORNERS": 2**ndim,
        "PREC": "ieee" if dtype == torch.float32 else "tf32",
    }  # fmt: skip
    if not gpu:
        return [Launch.of({**consts, "BLOCK_V": 256} | ({"HOLD_W": True} if backward else {}))]
    widest = max(cx_p, f_p, cg_p if same else 16)
    block_v = max(16, min(128, (2048 if backward else 4096) // widest))
    tiles = [block_v >> i for i in range(block_v.bit_length()) if block_v >> i >= 16]
    warps = 8 if widest >= 128 else 4
    if backward:
        return [
            Launch.of({**consts, "BLOCK_V": bv, "HOLD_W": hold}, warps, 1) for hold in (True, False) for bv in tiles
        ]
    return [Launch.of({**consts, "BLOCK_V": bv}, warps, stages) for bv in tiles for stages in (2, 1)]


def _setup(x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor) -> tuple:
    """Common launch arguments: flattened tensors, coarse φ (or x as a placeholder), geometry."""
    bsz, cx, *sizes = x.shape
    cg, sizes_g = g.shape[1], list(g.shape[2:])
    d, h, w = ([1] + sizes)[-3:]
    dg, hg, wg = ([1] + sizes_g)[-3:]
    xf, gf = x.contiguous().view(bsz, cx, -1), g.contiguous().view(bsz, cg, -1)
    wx, wgc = w_x.float().contiguous(), w_g.float().contiguous()
    phi = xf  # placeholder pointer when g is on x's grid
    if sizes_g != sizes:  # project on g's grid (fp32), interpolated inside the kernel
        phi = (torch.einsum("fc,bcn->bfn", w_g.float(), gf.float()) + b.float()[None, :, None]).contiguous()
    geo = (d * h * w, h, w, dg, hg, wg, dg / d, hg / h, wg / w)
    return xf, gf, phi, wx, wgc, geo


def _candidates(x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, backward: bool) -> list[Launch]:
    same = g.shape[2:] == x.shape[2:]
    return candidates(x.shape[1], g.shape[1], w_x.shape[0], same, x.ndim - 2, x.dtype, gpu_configs(x), backward)


def forward(
    x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor, psi: torch.Tensor,
    b_psi: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    xf, gf, phi, wx, wg, geo = _setup(x, g, w_x, w_g, b)
    out = torch.empty_like(xf)
    params = (b.float().contiguous(), psi.float().contiguous(), b_psi.float().reshape(1))

    def bind(launch: Launch) -> tuple:
        grid = (triton.cdiv(geo[0], launch["BLOCK_V"]), x.shape[0])
        return grid, (xf, gf, phi, wx, wg, *params, out, *geo)

    run("gate.fwd", _gate_fwd_kernel, _candidates(x, g, w_x, backward=False), bind, x)
    return out.view(x.shape)


def backward(
    dout: torch.Tensor, x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor,
    psi: torch.Tensor, b_psi: torch.Tensor,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    xf, gf, phi, wx, wg, geo = _setup(x, g, w_x, w_g, b)
    bsz, cx, cg, f, same = x.shape[0], x.shape[1], g.shape[1], w_x.shape[0], g.shape[2:] == x.shape[2:]
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 1
    dx = torch.empty_like(xf)
    dg = torch.empty_like(gf) if same else gf  # written by the kernel only when g is on x's grid
    dphi = torch.zeros_like(phi, dtype=torch.float32) if not same else xf
    params = (b.float().contiguous(), psi.float().contiguous(), b_psi.float().reshape(1))

    def bind(launch: Launch) -> tuple:
        tiles_per_b = triton.cdiv(geo[0], launch["BLOCK_V"])
        n_prog = min(bsz * tiles_per_b, 4 * sms)  # persistent programs; weight gradients summed over them below
        part = [torch.zeros(n_prog, *s, device=x.device) for s in ((f, cx), (f, cg), (f,), (f,), ())]
        args = (dout.contiguous().view_as(xf), xf, gf, phi, wx, wg, *params, dx, dg, dphi, *part)
        return (n_prog,), (*args, *geo, bsz * tiles_per_b, tiles_per_b)

    args = run("gate.bwd", _gate_bwd_kernel, _candidates(x, g, w_x, backward=True), bind, x)
    part_wx, part_wg, part_b, part_psi, part_bpsi = args[12:17]  # the partial sums the launch wrote
    dw_g = part_wg.sum(0)
    if not same:  # dφ on g's grid → dW_g and dg by GEMMs there
        dw_g = torch.einsum("bfn,bcn->fc", dphi, gf.float())
        dg = torch.einsum("fc,bfn->bcn", w_g.float(), dphi).to(g.dtype)
    return (
        dx.view(x.shape), dg.view(g.shape), part_wx.sum(0).to(w_x.dtype), dw_g.to(w_g.dtype),
        part_b.sum(0).to(b.dtype), part_psi.sum(0).to(psi.dtype), part_bpsi.sum().reshape(b_psi.shape),
    )  # fmt: skip
