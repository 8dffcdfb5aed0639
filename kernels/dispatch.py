"""Backend choice for medseg_kernels ops."""

from __future__ import annotations

import os

import torch


def triton_available() -> bool:
    """True when triton imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def backend(t: torch.Tensor) -> str:
    """``triton`` or ``reference`` for a tensor, honouring ``MEDSEG_KERNELS=reference|triton``."""
    forced = os.environ.get("MEDSEG_KERNELS", "").lower()
    if forced in ("reference", "triton"):
        return forced
    return "triton" if t.is_cuda and triton_available() else "reference"


TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when the Triton kernels should run: backend ``triton`` and one Triton-supported dtype and device.

    float64 (and mixed dtypes or devices) always take the reference, even when ``MEDSEG_KERNELS=triton``.
    """
    first = tensors[0]
    return backend(first) == "triton" and all(
        t.dtype == first.dtype and t.device == first.device and t.dtype in TRITON_DTYPES for t in tensors
    )
