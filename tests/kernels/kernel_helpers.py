"""Shared helpers of the kernel tests (device, tolerances, backend forcing, sm_90 compilation without a GPU)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"  # CPU: the Triton interpreter (tests/kernels/conftest.py)
# max |kernel − float64 reference| / max |reference|, outputs and gradients
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
SHARED_LIMIT = {90: 232448, 80: 166912}  # bytes of shared memory one block may use: H100/H200, A100


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def force_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route supported inputs to the Triton kernels (on CPU they run interpreted)."""
    monkeypatch.setenv("MEDSEG_KERNELS", "triton")


def randn(*shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, dtype=torch.float64) * scale).to(device=DEVICE, dtype=dtype)


def leaves(*tensors: torch.Tensor, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Fresh leaf copies requiring grad (optionally cast, e.g. to float64 for the reference)."""
    return [t.detach().to(dtype or t.dtype).clone().requires_grad_() for t in tensors]


def parity(
    op: Callable[..., torch.Tensor],
    ref: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    dout: torch.Tensor,
    names: Sequence[str],
) -> tuple[dict[str, float], list[torch.Tensor], list[torch.Tensor]]:
    """``op(*inputs)`` and its input gradients against ``ref`` run on float64 copies: relative errors by name
    (``out``, ``d<name>``), plus the leaves of both runs (for errors a test measures differently)."""
    ref_in = leaves(*inputs, dtype=torch.float64)
    expected = ref(*ref_in)
    expected.backward(dout.double())
    mine = leaves(*inputs)
    out = op(*mine)
    out.backward(dout)
    assert out.dtype == inputs[0].dtype and out.shape == expected.shape
    errs = {"out": rel_err(out, expected)}
    errs |= {f"d{n}": rel_err(a.grad, r.grad) for n, a, r in zip(names, mine, ref_in, strict=True)}
    return errs, mine, ref_in
