"""Benchmark the medseg_kernels Triton ops against PyTorch on a CUDA GPU: table on stdout + JSON.

    python scripts/bench_kernels.py [--out bench_kernels.json] [--ops global,gate,neighborhood] [--quick]

Per op and size: our kernel (the registered op; for global attention also the default routing, ``routed``, which
takes SDPA or ours per call as measured), PyTorch eager (the reference), ``torch.compile`` of the reference,
SDPA (global; q/k zero-padded to v's width since dk ≠ dv, explicit scale) and FlexAttention with a 3D neighbourhood
block mask (neighbourhood; mask build timed apart). Before timing, the kernel is checked against the float64
reference (forward and gradients, on a reduced problem when the full one does not fit) and every baseline against
the kernel at the benchmark size; a mismatch is reported and its timing skipped. Times are medians of CUDA-event
timings (``triton.testing.do_bench``) after warm-up, forward and forward+backward. The floor is the largest of
bytes / measured copy bandwidth, FLOPs / measured bf16 matmul rate and exponentials / ``EXP_PER_S``.

Without a CUDA GPU it says so, runs a tiny correctness pass of the kernels in the Triton CPU interpreter, and exits
0 (1 if that pass fails).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

EXP_PER_S = 4.1e12  # exponentials per second (SFU-bound) on H100/H200, from the floors in reference/kernels.md
TOL = {torch.bfloat16: 3e-2, torch.float16: 4e-3, torch.float32: 2e-5}


def rel_err(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    assert a is not None and b is not None
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


# ------------------------------------------------------------------------------------------------------------ cases
def global_case(b: int, h: int, n: int, dk: int, dv: int, scale: float | None, dtype: torch.dtype) -> dict:
    from medseg_kernels.attention_ref import global_attention_ref
    from medseg_kernels.global_attn import global_attention, global_attention_fwd

    sc = dk**-0.5 if scale is None else scale

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        width = max(dk, dv)  # zero columns change neither q·k nor the output
        q, k = (torch.nn.functional.pad(t, (0, width - dk)) for t in (q, k))
        vp = torch.nn.functional.pad(v, (0, width - dv))
        return torch.nn.functional.scaled_dot_product_attention(q, k, vp, scale=sc)[..., :dv]

    def make(reduced: bool) -> list[torch.Tensor]:
        tokens = min(n, 2048) if reduced else n
        return [torch.randn(b, h, tokens, d, device="cuda", dtype=dtype) for d in (dk, dk, dv)]

    elt, bh = torch.finfo(dtype).bits // 8, b * h
    io = bh * n * (2 * dk + 2 * dv) * elt
    return {
        "op": "global", "case": f"B{b} h{h} N={n} dk={dk} dv={dv} scale={scale}", "make": make,
        "ours": lambda q, k, v: global_attention_fwd(q, k, v, sc)[0],  # our Triton op, whatever the routing says
        "ref": lambda q, k, v: global_attention_ref(q, k, v, scale),
        # the default dispatch (global_attn.route): SDPA or ours as measured, per call (inference / training)
        "baselines": {"sdpa": sdpa, "routed": lambda q, k, v: global_attention(q, k, v, scale)},
        "eager_ok": bh * n * n * 4 * 3 < 40e9,
        "floor": ((io, 2 * bh * n * n * (dk + dv), bh * n * n),
                  (3 * io, 2 * bh * n * n * (4 * dk + 3 * dv), 2 * bh * n * n)),
    }  # fmt: skip


def gate_case(b: int, cx: int, cg: int, f: int, s: tuple[int, ...], sg: tuple[int, ...], dtype: torch.dtype) -> dict:
    from medseg_kernels.gate import attention_gate
    from medseg_kernels.gate_ref import attention_gate_ref

    def make(reduced: bool) -> list[torch.Tensor]:
        div = 4 if reduced else 1
        ss, ssg = [max(x // div, 2) for x in s], [max(x // div, 1) for x in sg]
        ssg = ss if s == sg else ssg
        ins = [
            torch.randn(b, cx, *ss, device="cuda", dtype=dtype),
            torch.randn(b, cg, *ssg, device="cuda", dtype=dtype),
        ]
        return ins + [torch.randn(*shape, device="cuda") * 0.3 for shape in ((f, cx), (f, cg), (f,), (f,), (1,))]

    elt, n, ng = torch.finfo(dtype).bits // 8, b * math.prod(s), b * math.prod(sg)
    fwd_bytes = (2 * n * cx + ng * cg) * elt
    flops = 2 * n * f * cx + 2 * ng * f * cg + 4 * n * f
    return {
        "op": "gate", "case": f"x {b}x{cx}x{'x'.join(map(str, s))}, g {cg}x{'x'.join(map(str, sg))}, F={f}",
        "make": make, "ours": attention_gate, "ref": attention_gate_ref, "baselines": {}, "eager_ok": True,
        "floor": ((fwd_bytes, flops, n), (fwd_bytes + (3 * n * cx + 2 * ng * cg) * elt, 3 * flops, 2 * n)),
    }  # fmt: skip


def na_mask_mod(sizes: tuple[int, ...], kernel: tuple[int, ...]) -> Callable:
    """FlexAttention mask_mod of NATTEN's clamped windows (dilation 1) on a row-major grid of ``sizes``."""

    def inside(qi: torch.Tensor, ki: torch.Tensor) -> torch.Tensor:
        ok = torch.ones_like(qi, dtype=torch.bool)
        for axis, (size, k) in enumerate(zip(sizes, kernel, strict=True)):
            stride = math.prod(sizes[axis + 1 :])
            qc, kc = (qi // stride) % size, (ki // stride) % size
            start = (qc - k // 2).clamp(0, size - k)
            ok = ok & (kc >= start) & (kc < start + k)
        return ok

    return lambda b, h, qi, ki: inside(qi, ki)


def na_case(b: int, h: int, sizes: tuple[int, ...], d: int, kernel: int, dtype: torch.dtype) -> dict:
    from medseg_kernels.attention_ref import neighborhood_attention_ref
    from medseg_kernels.neighborhood import neighborhood_attention

    ker = (kernel,) * len(sizes)

    def make(reduced: bool) -> list[torch.Tensor]:
        ss = [max(s // 4, kernel) if reduced else s for s in sizes]
        return [torch.randn(b, h, *ss, d, device="cuda", dtype=dtype) for _ in range(3)]

    def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if "flex" not in state:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention

            t0 = time.perf_counter()
            mask = create_block_mask(na_mask_mod(sizes, ker), None, None, n, n, device="cuda", _compile=True)
            torch.cuda.synchronize()
            state["mask_s"] = time.perf_counter() - t0
            state["flex"] = (torch.compile(flex_attention), mask)
        fn, mask = state["flex"]
        flat = [t.flatten(2, -2) for t in (q, k, v)]
        return fn(*flat, block_mask=mask).view(v.shape)

    state: dict[str, Any] = {}
    elt, n, bh, kk = torch.finfo(dtype).bits // 8, math.prod(sizes), b * h, kernel ** len(sizes)
    io = bh * n * 4 * d * elt
    return {
        "op": "neighborhood", "case": f"B{b} h{h} {'x'.join(map(str, sizes))} d={d} window {kernel}",
        "make": make, "ours": lambda q, k, v: neighborhood_attention(q, k, v, ker),
        "ref": lambda q, k, v: neighborhood_attention_ref(q, k, v, ker), "baselines": {"flex": flex}, "state": state,
        "eager_ok": bh * n * kk * d * elt * 6 < 40e9,
        "floor": ((io, 4 * bh * n * kk * d, bh * n * kk), (3 * io, 14 * bh * n * kk * d, 2 * bh * n * kk)),
    }  # fmt: skip


def cases(ops: list[str], quick: bool, dtype: torch.dtype) -> list[dict]:
    out = []
    if "global" in ops:
        out += [global_case(1, 4, 32**3, 32, 32, None, dtype), global_case(1, 1, 16**3, 32, 256, 1.0, dtype)]
        if not quick:
            out += [global_case(1, 4, 16**3, 32, 32, None, dtype), global_case(2, 1, 24**3, 16, 128, 1.0, dtype)]
    if "gate" in ops:
        out += [gate_case(1, 64, 128, 32, (128,) * 3, (64,) * 3, dtype)]
        out += [] if quick else [gate_case(2, 32, 64, 16, (64,) * 3, (32,) * 3, dtype),
                                 gate_case(1, 32, 32, 16, (96,) * 3, (96,) * 3, dtype),
                                 gate_case(8, 64, 128, 32, (512, 512), (256, 256), dtype)]  # fmt: skip
    if "neighborhood" in ops:
        out += [na_case(1, 4, (64,) * 3, 32, 7, dtype)]
        out += [] if quick else [na_case(1, 4, (32,) * 3, 32, 7, dtype), na_case(1, 4, (48,) * 3, 32, 3, dtype),
                                 na_case(1, 4, (256, 256), 32, 13, dtype)]  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------------------- timing
def ceilings() -> dict[str, float]:
    from triton.testing import do_bench

    x = torch.empty(1 << 29, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    bw = 2 * x.numel() * 2 / (do_bench(lambda: y.copy_(x), return_mode="median") * 1e-3)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    flops = 2 * 8192**3 / (do_bench(lambda: a @ a, return_mode="median") * 1e-3)
    return {"copy_bytes_per_s": bw, "bf16_flops_per_s": flops, "exp_per_s": EXP_PER_S}


def floor_ms(parts: tuple[float, float, float], ceil: dict[str, float]) -> float:
    nbytes, flops, exps = parts
    return 1e3 * max(nbytes / ceil["copy_bytes_per_s"], flops / ceil["bf16_flops_per_s"], exps / ceil["exp_per_s"])


def check_small(case: dict) -> float:
    """Max relative error of our kernel (output and input gradients) against the float64 reference, reduced size."""
    ins = case["make"](True)
    mine = [t.detach().clone().requires_grad_() for t in ins]
    ref_in = [t.detach().double().requires_grad_() for t in ins]
    out, ref = case["ours"](*mine), case["ref"](*ref_in)
    dout = torch.randn_like(out)
    out.backward(dout)
    ref.backward(dout.double())
    return max([rel_err(out, ref)] + [rel_err(a.grad, r.grad) for a, r in zip(mine, ref_in, strict=True)])


def bench(fn: Callable, ins: list[torch.Tensor], backward: bool) -> float | str:
    from triton.testing import do_bench

    try:
        if not backward:
            with torch.no_grad():
                return do_bench(lambda: fn(*ins), warmup=25, rep=100, return_mode="median")
        leaves = [t.detach().requires_grad_() for t in ins]  # gradients for every input (weights included)
        dout = torch.randn_like(fn(*leaves))
        step = lambda: fn(*leaves).backward(dout)  # noqa: E731
        return do_bench(step, warmup=25, rep=100, grad_to_none=leaves, return_mode="median")
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"


def run_gpu(args: argparse.Namespace) -> int:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    ceil = ceilings()
    rows: list[dict[str, Any]] = []
    for case in cases(args.ops.split(","), args.quick, dtype):
        small_err = check_small(case)
        ok = small_err < TOL[dtype]
        print(f"[check] {case['op']} {case['case']}: kernel vs float64 reference (reduced) rel err {small_err:.2e}")
        ins = case["make"](False)
        with torch.no_grad():
            ours = case["ours"](*ins)
        variants: dict[str, Callable] = {"triton (ours)": case["ours"]}
        if case["eager_ok"]:
            variants |= {"eager": case["ref"], "torch.compile": torch.compile(case["ref"])}
        variants |= case["baselines"]
        for name, fn in variants.items():
            err = 0.0 if fn is case["ours"] else rel_err(fn(*ins), ours)
            match = ok if fn is case["ours"] else err < max(TOL[dtype], 3e-2)
            row = {"op": case["op"], "case": case["case"], "variant": name, "rel_err": err or small_err}
            row |= {"fwd_ms": "skipped (mismatch)", "fwd_bwd_ms": "skipped (mismatch)"}
            if match:
                row |= {"fwd_ms": bench(fn, ins, False), "fwd_bwd_ms": bench(fn, ins, True)}
            row |= {"floor_fwd_ms": floor_ms(case["floor"][0], ceil)}
            row |= {"floor_fwd_bwd_ms": floor_ms(case["floor"][1], ceil)}
            if name == "flex" and "mask_s" in case.get("state", {}):
                row["block_mask_build_s"] = case["state"]["mask_s"]
            rows.append(row)
            print(_fmt(row), flush=True)
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": args.dtype, **ceil}
    meta["triton"] = __import__("triton").__version__
    with open(args.out, "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=2)
    print(f"\n{json.dumps(meta)}\nwritten {args.out}")
    return 0


def _fmt(row: dict) -> str:
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    cols = [row["op"], row["case"], row["variant"], cell(row["fwd_ms"]), cell(row["fwd_bwd_ms"])]
    cols += [cell(row["floor_fwd_ms"]), cell(row["floor_fwd_bwd_ms"]), f"{row['rel_err']:.1e}"]
    return "| " + " | ".join(cols) + " |"


# ------------------------------------------------------------------------------------------------------ no GPU path
def run_cpu_check() -> int:
    """Tiny fp32 correctness pass of every kernel (forward and backward) in the Triton CPU interpreter."""
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ["MEDSEG_KERNELS"] = "triton"
    from medseg_kernels.attention_ref import global_attention_ref, neighborhood_attention_ref
    from medseg_kernels.gate import attention_gate
    from medseg_kernels.gate_ref import attention_gate_ref
    from medseg_kernels.global_attn import global_attention
    from medseg_kernels.neighborhood import neighborhood_attention

    torch.manual_seed(0)
    q3 = [torch.randn(1, 2, 6, 5, 7, 16) for _ in range(3)]
    g = [torch.randn(1, 1, 50, d) for d in (8, 8, 40)]
    gate_in = [torch.randn(1, 8, 7, 6, 5), torch.randn(1, 16, 4, 3, 3), torch.randn(4, 8), torch.randn(4, 16)]
    gate_in += [torch.randn(4), torch.randn(4), torch.randn(1)]
    checks = {
        "global": (lambda *t: global_attention(*t, 1.0), lambda *t: global_attention_ref(*t, 1.0), g),
        "gate": (attention_gate, attention_gate_ref, gate_in),
        "neighborhood": (lambda *t: neighborhood_attention(*t, 3), lambda *t: neighborhood_attention_ref(*t, 3), q3),
    }
    worst = 0.0
    for name, (ours, ref, ins) in checks.items():
        mine = [t.clone().requires_grad_() for t in ins]
        ref_in = [t.double().requires_grad_() for t in ins]
        out, expected = ours(*mine), ref(*ref_in)
        dout = torch.randn_like(out)
        out.backward(dout)
        expected.backward(dout.double())
        errs = [rel_err(out, expected)] + [rel_err(a.grad, r.grad) for a, r in zip(mine, ref_in, strict=True)]
        worst = max(worst, *errs)
        print(f"  {name:13s} interpreter fp32 vs float64 reference: max rel err {max(errs):.1e}")
    return 0 if worst < 1e-3 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_kernels.json")
    parser.add_argument("--ops", default="global,gate,neighborhood")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--quick", action="store_true", help="one size per op (the reference/kernels.md cases)")
    args = parser.parse_args(argv)
    if torch.cuda.is_available():
        print("| op | case | variant | fwd ms | fwd+bwd ms | floor fwd ms | floor fwd+bwd ms | rel err |")
        print("|---|---|---|---|---|---|---|---|")
        return run_gpu(args)
    print("bench_kernels: no CUDA GPU here, so no timings (they need an H100/H200-class GPU; see docs/benchmarks.md).")
    print("Running a tiny correctness pass of the Triton kernels in the CPU interpreter instead:")
    return run_cpu_check()


if __name__ == "__main__":
    sys.exit(main())
