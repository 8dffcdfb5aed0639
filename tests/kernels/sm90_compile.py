"""Compile the Triton kernels for sm_90 (H100/H200) without a GPU: ``python sm90_compile.py CASE...``.

Each case builds the launch configuration the op would use on a GPU (the modules' ``config`` functions), compiles
every kernel through ptxas and prints one JSON line per kernel (name, shared memory). Run in a fresh process without
``TRITON_INTERPRET`` (the interpreter replaces @triton.jit functions at import); tests/kernels/test_sm90.py does.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def _compile(name: str, fn: Any, sig: dict[str, str], consts: dict[str, Any], opts: dict[str, int]) -> None:
    t0 = time.time()
    src = ASTSource(fn=fn, signature={**sig, **dict.fromkeys(consts, "constexpr")}, constexprs=consts)
    meta = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts).metadata
    print(json.dumps({"kernel": name, "shared": meta.shared, "seconds": round(time.time() - t0, 1)}), flush=True)


def global_attn(dtype: torch.dtype, dk: int, dv: int) -> None:
    from medseg_kernels import global_attn_triton as m

    consts, opts = m.config(dk, dv, dtype, gpu=True)
    p, f = f"*{TYPES[dtype]}", "*fp32"
    common = {"Q": p, "K": p, "V": p}
    _compile("global.fwd", m._fwd_kernel, {**common, "Out": p, "LSE": f, "N": "i32", "qk_scale": "fp32"}, consts, opts)
    bwd = {**common, "DO": p, "LSE": f, "DELTA": f}
    _compile("global.dkdv", m._bwd_dkdv_kernel,
             {**bwd, "DKo": p, "DVo": p, "N": "i32", "qk_scale": "fp32", "scale": "fp32"}, consts, opts)  # fmt: skip
    _compile("global.dq", m._bwd_dq_kernel, {**bwd, "DQo": p, "N": "i32", "qk_scale": "fp32", "scale": "fp32"},
             consts, opts)  # fmt: skip


def gate(dtype: torch.dtype, cx: int, cg: int, f: int, same: bool, ndim: int) -> None:
    from medseg_kernels import gate_triton as m

    p, f32 = f"*{TYPES[dtype]}", "*fp32"
    geo = dict.fromkeys(["N", "H", "W", "Dg", "Hg", "Wg"], "i32") | dict.fromkeys(["sd", "sh", "sw"], "fp32")
    ins = {"X": p, "G": p, "PHI": f32, "WX": f32, "WG": f32, "Bv": f32, "PSI": f32, "BPSI": f32}
    consts, opts = m.config(cx, cg, f, same, ndim, dtype, gpu=True, backward=False)
    _compile("gate.fwd", m._gate_fwd_kernel, {**ins, "OUT": p, **geo}, consts, opts)
    consts, opts = m.config(cx, cg, f, same, ndim, dtype, gpu=True, backward=True)
    outs = {"DX": p, "DG": p, "DPHI": f32} | dict.fromkeys(["DWX_P", "DWG_P", "DB_P", "DPSI_P", "DBPSI_P"], f32)
    sig = {"DOUT": p, **ins, **outs, **geo, "n_tiles": "i32", "tiles_per_b": "i32"}
    _compile("gate.bwd", m._gate_bwd_kernel, sig, consts, opts)


def neighborhood(dtype: torch.dtype, ndim: int, d: int, kernel: int) -> None:
    from medseg_kernels import neighborhood_triton as m

    consts, opts = m.config(ndim, d, d, dtype, gpu=True)
    consts |= {"KD": kernel if ndim == 3 else 1, "KH": kernel if ndim >= 2 else 1, "KW": kernel}
    p, f = f"*{TYPES[dtype]}", "*fp32"
    geo = dict.fromkeys(["N", "SD", "SH", "SW", "RD", "RH", "RW", "NSH", "NSW"], "i32")
    sig = {
        "Q": p,
        "K": p,
        "V": p,
        "Out": p,
        "LSE": f,
        "DO": p,
        "DELTA": f,
        "DQ": p,
        "qk_scale": "fp32",
        "scale": "fp32",
    }
    for grad_q in (False, True):
        _compile(f"na.{'dq' if grad_q else 'fwd'}", m._fwd_kernel, {**sig, **geo},
                 consts | {"BLOCK_K": 64, "GRAD_Q": grad_q}, opts)  # fmt: skip
    sig = {
        "Q": p,
        "K": p,
        "V": p,
        "DO": p,
        "LSE": f,
        "DELTA": f,
        "DK": p,
        "DV_": p,
        "qk_scale": "fp32",
        "scale": "fp32",
    }
    _compile("na.dkdv", m._bwd_dkdv_kernel, {**sig, **geo}, consts | {"BLOCK_Q": 64}, opts)


CASES = {
    "global-bf16": lambda: global_attn(torch.bfloat16, 16, 128),
    "global-fp16-wide": lambda: global_attn(torch.float16, 64, 256),
    "global-fp32": lambda: global_attn(torch.float32, 32, 100),
    "global-bf16-d128": lambda: global_attn(torch.bfloat16, 128, 128),
    "gate-bf16-up3d": lambda: gate(torch.bfloat16, 64, 128, 32, False, 3),
    "gate-bf16-same3d": lambda: gate(torch.bfloat16, 64, 64, 32, True, 3),
    "gate-fp16-up2d-wide": lambda: gate(torch.float16, 128, 256, 64, False, 2),
    "gate-bf16-same3d-wide": lambda: gate(torch.bfloat16, 128, 128, 128, True, 3),
    "gate-bf16-same3d-limit": lambda: gate(torch.bfloat16, 256, 256, 64, True, 3),  # gate_op.MAX_WEIGHTS
    "gate-fp32-up3d-wide": lambda: gate(torch.float32, 128, 256, 128, False, 3),
    "gate-bf16-up3d-limit": lambda: gate(torch.bfloat16, 256, 512, 64, False, 3),  # gate_op.MAX_WEIGHTS_COARSE
    "na-bf16-3d": lambda: neighborhood(torch.bfloat16, 3, 32, 7),
    "na-bf16-3d-d128": lambda: neighborhood(torch.bfloat16, 3, 128, 13),
    "na-fp32-2d": lambda: neighborhood(torch.float32, 2, 64, 7),
    "na-fp32-3d-d128": lambda: neighborhood(torch.float32, 3, 128, 5),
}

if __name__ == "__main__":
    for case in sys.argv[1:] or list(CASES):
        CASES[case]()
