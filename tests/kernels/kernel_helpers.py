"""Shared helpers of the kernel tests (device, tolerances, backend forcing, sm_90 compilation without a GPU)."""

from __future__ import annotations

import importlib.util

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
SM90_SHARED_LIMIT = 232448  # bytes of shared memory one block may use on H100/H200


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
