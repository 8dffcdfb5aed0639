"""Global (flash) attention: Triton forward/backward vs the float64 reference, op registration, dispatch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from kernel_helpers import CUDA, DEVICE, TOL, force_triton, gpu, needs_gpu, needs_triton, parity, randn

from medseg_kernels import global_attn
from medseg_kernels.attention import global_attention
from medseg_kernels.attention_ref import global_attention_ref

# (B, heads, N, dk, dv, scale): odd N (partial blocks), dk ≠ dv (PAM), several value chunks, scale 1 (DANet)
SHAPES = [(1, 2, 37, 8, 40, None), (2, 1, 130, 20, 80, 1.0), (1, 1, 100, 16, 150, 0.3)]


def _parity(shape: tuple, dtype: torch.dtype) -> dict[str, float]:
    b, h, n, dk, dv, scale = shape
    q, k = randn(b, h, n, dk, dtype=dtype), randn(b, h, n, dk, dtype=dtype)
    v, dout = randn(b, h, n, dv, dtype=dtype), randn(b, h, n, dv, dtype=dtype)

    def op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return global_attention(q, k, v, scale)

    def ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return global_attention_ref(q, k, v, scale)

    return parity(op, ref, (q, k, v), dout, "qkv")[0]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triton_matches_float64_reference(monkeypatch, shape, dtype):
    force_triton(monkeypatch)
    torch.manual_seed(hash(shape) % 1000)
    errs = _parity(shape, dtype)
    assert max(errs.values()) < TOL[dtype], errs


@needs_triton
def test_forced_triton_runs_the_kernels_and_reference_does_not(monkeypatch):
    from medseg_kernels import global_attn_triton

    calls = []
    original = global_attn_triton.forward
    monkeypatch.setattr(global_attn_triton, "forward", lambda *a: calls.append(1) or original(*a))
    q = randn(1, 1, 20, 16)
    monkeypatch.setenv("MEDSEG_KERNELS", "reference")
    global_attention(q, q, q)
    assert not calls
    force_triton(monkeypatch)
    global_attention(q, q, q)
    assert calls == [1]
    global_attention(q.double(), q.double(), q.double())  # float64 always takes the reference
    assert calls == [1]


def test_reference_gradcheck_float64():
    q, k, v = (torch.randn(1, 2, 6, d, dtype=torch.float64, requires_grad=True) for d in (3, 3, 5))
    assert torch.autograd.gradcheck(lambda a, b, c: global_attention_ref(a, b, c, 0.7), (q, k, v))
    # the registered op on its reference path: its explicit backward formulas
    assert torch.autograd.gradcheck(lambda a, b, c: global_attn.global_attention_fwd(a, b, c, 0.7)[0], (q, k, v))


def test_cuda_choice_follows_the_measured_table():
    """SDPA wherever gradients are needed and for dk = dv; ours only for inference with dk ≠ dv (H100 numbers)."""
    assert [(m.same_dims, m.ours_fwd < m.sdpa_fwd, m.ours_train < m.sdpa_train) for m in global_attn.MEASURED] == [
        (True, False, False),
        (False, True, False),
    ]
    choices = {(same, grad): global_attn.cuda_choice(same, grad) for same in (True, False) for grad in (True, False)}
    assert choices == {(True, True): "sdpa", (True, False): "sdpa", (False, True): "sdpa", (False, False): "triton"}


def _fake_cuda(*shape: int, grad: bool = False, dtype: torch.dtype = torch.bfloat16) -> SimpleNamespace:
    return SimpleNamespace(shape=shape, dtype=dtype, device="cuda:0", is_cuda=True, requires_grad=grad)


@pytest.mark.parametrize("served", [True, False])
def test_route_on_cuda_inputs(monkeypatch, served):
    monkeypatch.delenv("MEDSEG_KERNELS", raising=False)
    monkeypatch.setattr(global_attn, "triton_supported", lambda q, k, v: served)
    qk, v_pam, v_same = _fake_cuda(1, 1, 64, 32), _fake_cuda(1, 1, 64, 256), _fake_cuda(1, 1, 64, 32)
    assert global_attn.route(qk, qk, v_pam) == ("triton" if served else "sdpa")  # inference, dk ≠ dv
    assert global_attn.route(qk, qk, v_same) == "sdpa"  # inference, dk = dv
    assert global_attn.route(_fake_cuda(1, 1, 64, 32, grad=True), qk, v_pam) == "sdpa"  # training
    with torch.no_grad():  # requires_grad but no graph recorded: inference
        assert global_attn.route(_fake_cuda(1, 1, 64, 32, grad=True), qk, v_pam) == ("triton" if served else "sdpa")
    f64 = _fake_cuda(1, 1, 64, 32, dtype=torch.float64)
    assert global_attn.route(f64, f64, _fake_cuda(1, 1, 64, 256, dtype=torch.float64)) == "reference"
    monkeypatch.setenv("MEDSEG_KERNELS", "reference")
    assert global_attn.route(qk, qk, v_pam) == "reference"
    monkeypatch.setenv("MEDSEG_KERNELS", "triton")
    assert global_attn.route(_fake_cuda(1, 1, 64, 32, grad=True), qk, v_same) == ("triton" if served else "reference")


def test_route_on_cpu_is_the_reference(monkeypatch):
    monkeypatch.delenv("MEDSEG_KERNELS", raising=False)
    q = torch.randn(1, 1, 10, 4, requires_grad=True)
    assert global_attn.route(q, q, torch.randn(1, 1, 10, 8)) == "reference"


@pytest.mark.parametrize("dk, dv", [(8, 40), (16, 16), (24, 8)])
def test_sdpa_path_matches_float64_reference(dk, dv):
    """The SDPA formulation (zero-padded to one head dim) gives the reference's values and gradients."""
    q, k, v, dout = randn(2, 2, 37, dk), randn(2, 2, 37, dk), randn(2, 2, 37, dv), randn(2, 2, 37, dv)
    errs, _, _ = parity(
        lambda a, b, c: global_attn.sdpa_attention(a, b, c, 0.7),
        lambda a, b, c: global_attention_ref(a, b, c, 0.7),
        (q.cpu(), k.cpu(), v.cpu()), dout.cpu(), "qkv",
    )  # fmt: skip
    assert max(errs.values()) < TOL[torch.float32], errs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(monkeypatch, dtype):
    monkeypatch.setenv("MEDSEG_KERNELS", "reference")
    q, k, v = (torch.randn(2, 2, 9, d, dtype=dtype, requires_grad=True) for d in (4, 4, 6))
    torch.library.opcheck(torch.ops.medseg.global_attention_fwd.default, (q, k, v, 0.5))
    out, lse = torch.ops.medseg.global_attention_fwd(q, k, v, 0.5)
    dout = torch.randn_like(out)
    args = (q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), dout, 0.5)
    torch.library.opcheck(torch.ops.medseg.global_attention_bwd.default, args)


def test_torch_compile_sees_one_op(monkeypatch):
    monkeypatch.setenv("MEDSEG_KERNELS", "reference")
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    fn = torch.compile(lambda a, b, c: global_attn.global_attention_fwd(a, b, c, 1.0)[0].sum(), backend=backend,
                       fullgraph=True)  # fmt: skip
    q, k, v = (torch.randn(1, 1, 7, d) for d in (4, 4, 6))
    torch.testing.assert_close(fn(q, k, v), global_attention_ref(q, k, v, 1.0).sum())
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert sum("global_attention_fwd" in t for t in targets) == 1, targets


@needs_triton
def test_torch_compile_with_triton_kernels(monkeypatch):
    force_triton(monkeypatch)
    q, k, v = (randn(1, 1, 40, d).requires_grad_() for d in (16, 16, 24))
    fn = torch.compile(lambda a, b, c: global_attention(a, b, c, 1.0), backend="aot_eager", fullgraph=True)
    out = fn(q, k, v)
    out.sum().backward()
    torch.testing.assert_close(out, global_attention_ref(q, k, v, 1.0), atol=1e-5, rtol=1e-5)
    assert q.grad is not None and torch.isfinite(q.grad).all()


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(
    "shape", [(2, 4, 32**3 // 8, 32, 32, None), (1, 1, 3000, 32, 256, 1.0), (1, 2, 1000, 128, 64, None)], ids=str
)
def test_gpu_parity(monkeypatch, shape, dtype):
    assert CUDA and DEVICE == "cuda"
    force_triton(monkeypatch)  # our kernels (unforced, training on CUDA routes to SDPA)
    torch.manual_seed(0)
    errs = _parity(shape, dtype)
    assert max(errs.values()) < TOL[dtype], errs


@gpu
@needs_gpu
@pytest.mark.parametrize("shape", [(2, 4, 4096, 32, 32, None), (1, 1, 3000, 32, 256, 1.0)], ids=str)
def test_gpu_default_route_matches_reference(monkeypatch, shape):
    """Unforced on CUDA: training takes SDPA, inference takes ours where dk ≠ dv; both match the reference."""
    monkeypatch.delenv("MEDSEG_KERNELS", raising=False)
    b, h, n, dk, dv, scale = shape
    q, k, v = (
        randn(b, h, n, dk, dtype=torch.bfloat16),
        randn(b, h, n, dk, dtype=torch.bfloat16),
        randn(b, h, n, dv, dtype=torch.bfloat16),
    )
    assert global_attn.route(q, k, v) == ("triton" if dk != dv else "sdpa")
    assert global_attn.route(q.requires_grad_(), k, v) == "sdpa"
    errs = _parity(shape, torch.bfloat16)
    assert max(errs.values()) < TOL[torch.bfloat16], errs
