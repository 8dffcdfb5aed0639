"""Neighbourhood attention: Triton forward/backward vs the float64 reference, op registration, dispatch."""

from __future__ import annotations

import pytest
import torch
from kernel_helpers import DEVICE, TOL, force_triton, gpu, needs_gpu, needs_triton, parity, randn

from medseg_kernels import neighborhood
from medseg_kernels.attention import neighborhood_attention
from medseg_kernels.attention_ref import neighborhood_attention_ref

# (sizes, kernel, dilation, d, dv): 3D/2D/1D, borders on every side, windows 3..7 (and an even one), dilation,
# sizes that are not multiples of the query tiles, dv ≠ d
CASES = [
    ((7, 6, 5), (3, 3, 3), (1, 1, 1), 16, 16),
    ((9, 8, 7), (5, 3, 5), (1, 2, 1), 20, 24),
    ((13, 11), (7, 5), (1, 2), 16, 32),
    ((40,), (5,), (3,), 16, 16),
    ((5, 6, 4), (3, 3, 2), (1, 2, 1), 8, 8),
]


def _parity(case: tuple, dtype: torch.dtype, batch: tuple[int, int] = (1, 2)) -> dict[str, float]:
    sizes, kernel, dilation, d, dv = case
    q, k = randn(*batch, *sizes, d, dtype=dtype), randn(*batch, *sizes, d, dtype=dtype)
    v, dout = randn(*batch, *sizes, dv, dtype=dtype), randn(*batch, *sizes, dv, dtype=dtype)

    def op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return neighborhood_attention(q, k, v, kernel, dilation)

    def ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return neighborhood_attention_ref(q, k, v, kernel, dilation)

    return parity(op, ref, (q, k, v), dout, "qkv")[0]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_triton_matches_float64_reference(monkeypatch, case, dtype):
    force_triton(monkeypatch)
    torch.manual_seed(hash(case) % 1000)
    errs = _parity(case, dtype)
    assert max(errs.values()) < TOL[dtype], errs


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [((6, 9, 10), (3, 3, 3), (2, 2, 3), 32, 16), ((10, 9, 11), (7, 7, 5), (1, 1, 2), 16, 16)], ids=str
)
def test_triton_matches_float64_reference_dilated_3d(monkeypatch, case):
    force_triton(monkeypatch)
    torch.manual_seed(0)
    errs = _parity(case, torch.float32)
    assert max(errs.values()) < TOL[torch.float32], errs


@needs_triton
def test_forced_triton_runs_the_kernels(monkeypatch):
    from medseg_kernels import neighborhood_triton

    calls = []
    original = neighborhood_triton.forward
    monkeypatch.setattr(neighborhood_triton, "forward", lambda *a: calls.append(1) or original(*a))
    q = randn(1, 1, 5, 5, 16)
    monkeypatch.setenv("MEDSEG_KERNELS", "reference")
    neighborhood_attention(q, q, q, 3)
    assert not calls
    force_triton(monkeypatch)
    neighborhood_attention(q, q, q, 3)
    assert calls == [1]
    with pytest.raises(ValueError, match="cannot hold"):
        neighborhood_attention(q, q, q, 7)


def test_reference_gradcheck_float64():
    q, k, v = (torch.randn(1, 2, 6, 5, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: neighborhood_attention_ref(a, b, c, 3, (2, 1)), (q, k, v))
    op = neighborhood.neighborhood_attention_fwd  # the registered op on its reference path (explicit backward)
    assert torch.autograd.gradcheck(lambda a, b, c: op(a, b, c, [3, 3], [1, 1], 0.4)[0], (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(monkeypatch, dtype):
    monkeypatch.setenv("MEDSEG_KERNELS", "reference")
    q, k = (torch.randn(2, 2, 5, 4, 3, 4, dtype=dtype, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 2, 5, 4, 3, 6, dtype=dtype, requires_grad=True)
    args = ([3, 3, 3], [1, 1, 1], 0.5)
    torch.library.opcheck(torch.ops.medseg.neighborhood_attention_fwd.default, (q, k, v, *args))
    out, lse = torch.ops.medseg.neighborhood_attention_fwd(q, k, v, *args)
    bwd_args = (q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), torch.randn_like(out), *args)
    torch.library.opcheck(torch.ops.medseg.neighborhood_attention_bwd.default, bwd_args)


def test_torch_compile_sees_one_op(monkeypatch):
    monkeypatch.setenv("MEDSEG_KERNELS", "reference")
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    op = neighborhood.neighborhood_attention_fwd
    fn = torch.compile(lambda a, b, c: op(a, b, c, [3, 3], [1, 1], 0.5)[0] + 1, backend=backend, fullgraph=True)
    q, k, v = (torch.randn(1, 2, 6, 5, 4) for _ in range(3))
    torch.testing.assert_close(fn(q, k, v), neighborhood_attention_ref(q, k, v, 3, 1, 0.5) + 1)
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert sum("neighborhood_attention_fwd" in t for t in targets) == 1, targets


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(
    "case", [((20, 21, 19), (7, 7, 7), (1, 1, 1), 32, 32), ((16, 17, 18), (13, 5, 3), (1, 2, 3), 64, 64),
             ((33, 40), (11, 7), (2, 1), 128, 128), ((24, 24, 24), (3, 3, 3), (2, 2, 2), 16, 48)], ids=str,
)  # fmt: skip
def test_gpu_parity(case, dtype):
    assert DEVICE == "cuda"
    torch.manual_seed(0)
    errs = _parity(case, dtype, batch=(2, 2))
    assert max(errs.values()) < TOL[dtype], errs
