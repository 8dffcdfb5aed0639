"""What the Triton ops would launch on sm_90 (H100/H200) and sm_80 (A100), without a GPU: ``python sm90_compile.py
[--arch 90,80] CASE...``.

Each case calls the op's own forward and backward (``*_triton.forward`` / ``backward``) on small CPU tensors of the
case's channel or head widths and dtype inside ``medseg_kernels.launch.compile_target``: the production choice runs,
compiling each kernel's candidate launch configurations for the target through ptxas (the installed Triton) until one
fits the target's shared memory, and nothing is launched. One JSON line per kernel launch: the chosen configuration,
its shared memory, its rank among the candidates (0: the preferred one fitted) and what the earlier ones needed; or
``error`` when no candidate fits. Run in a fresh process without ``TRITON_INTERPRET`` (the interpreter replaces
@triton.jit functions at import); tests/kernels/test_sm90_and_dispatch.py does.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from medseg_kernels import launch


def _randn(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape).to(dtype)


def global_attn(dtype: torch.dtype, dk: int, dv: int) -> None:
    from medseg_kernels import global_attn_triton as m

    q, k, v = _randn(1, 1, 16, dk, dtype=dtype), _randn(1, 1, 16, dk, dtype=dtype), _randn(1, 1, 16, dv, dtype=dtype)
    out, lse = m.forward(q, k, v, dk**-0.5)
    m.backward(q, k, v, out, lse, torch.randn_like(out), dk**-0.5)


def gate(dtype: torch.dtype, cx: int, cg: int, f: int, same: bool, ndim: int) -> None:
    from medseg_kernels import gate_triton as m

    sizes = (4,) * ndim
    x, g = _randn(1, cx, *sizes, dtype=dtype), _randn(1, cg, *(sizes if same else (2,) * ndim), dtype=dtype)
    params = (torch.randn(f, cx), torch.randn(f, cg), torch.randn(f), torch.randn(f), torch.randn(1))
    m.forward(x, g, *params)
    m.backward(torch.randn_like(x), x, g, *params)


def neighborhood(dtype: torch.dtype, ndim: int, d: int, kernel: int) -> None:
    from medseg_kernels import neighborhood_triton as m

    q = _randn(1, 1, *(kernel + 1,) * ndim, d, dtype=dtype)
    window = (kernel,) * ndim
    out, lse = m.forward(q, q, q, window, (1,) * ndim, d**-0.5)
    m.backward(q, q, q, out, lse, torch.randn_like(out), window, (1,) * ndim, d**-0.5)


CASES: dict[str, Callable[[], None]] = {
    "global-bf16": lambda: global_attn(torch.bfloat16, 16, 128),
    "global-fp16-wide": lambda: global_attn(torch.float16, 64, 256),
    "global-fp32": lambda: global_attn(torch.float32, 32, 100),
    "global-bf16-d128": lambda: global_attn(torch.bfloat16, 128, 128),  # global_attn.MAX_QK_DIM
    "gate-bf16-up3d": lambda: gate(torch.bfloat16, 64, 128, 32, False, 3),
    "gate-bf16-same3d": lambda: gate(torch.bfloat16, 64, 64, 32, True, 3),
    "gate-fp16-up2d-wide": lambda: gate(torch.float16, 128, 256, 64, False, 2),
    "gate-bf16-same3d-wide": lambda: gate(torch.bfloat16, 128, 128, 128, True, 3),
    "gate-bf16-same3d-limit": lambda: gate(torch.bfloat16, 256, 256, 64, True, 3),  # gate_op.MAX_WEIGHTS
    "gate-fp32-same3d-limit": lambda: gate(torch.float32, 256, 256, 64, True, 3),
    "gate-fp32-up3d-wide": lambda: gate(torch.float32, 128, 256, 128, False, 3),  # gate_op.MAX_WEIGHTS_COARSE
    "gate-bf16-up3d-limit": lambda: gate(torch.bfloat16, 256, 512, 64, False, 3),  # gate_op.MAX_WEIGHTS_COARSE
    "na-bf16-3d": lambda: neighborhood(torch.bfloat16, 3, 32, 7),
    "na-bf16-3d-d128": lambda: neighborhood(torch.bfloat16, 3, 128, 13),  # neighborhood.MAX_HEAD_DIM
    "na-fp32-2d": lambda: neighborhood(torch.float32, 2, 64, 7),
    "na-fp32-3d-d128": lambda: neighborhood(torch.float32, 3, 128, 5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"default: all of {', '.join(CASES)}")
    parser.add_argument("--arch", default="90,80", help="compute capabilities, comma-separated (default 90,80)")
    args = parser.parse_args()
    for case in args.cases or list(CASES):
        for arch in (int(a) for a in args.arch.split(",")):
            t0 = time.time()
            with launch.compile_target(arch) as records:
                try:
                    CASES[case]()
                    error = None
                except launch.NoLaunchFits as err:
                    error = str(err)
            seconds = round(time.time() - t0, 1)
            for r in records:
                tried = [[c.describe(), need] for c, need in r.tried]
                line = {"case": case, "arch": arch, "kernel": r.name, "shared": r.shared, "rank": r.rank}
                print(json.dumps(line | {"launch": r.launch.describe(), "tried": tried}), flush=True)
            if error is not None:
                print(json.dumps({"case": case, "arch": arch, "error": error}), flush=True)
            print(json.dumps({"case": case, "arch": arch, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
