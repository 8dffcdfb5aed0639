"""Backend choice for medseg_kernels ops."""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

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


def forced_backend() -> str | None:
    """``reference`` or ``triton`` when ``MEDSEG_KERNELS`` forces one, else ``None``."""
    forced = os.environ.get("MEDSEG_KERNELS", "").lower()
    return forced if forced in ("reference", "triton") else None


def backend(t: torch.Tensor) -> str:
    """``triton`` or ``reference`` for a tensor, honouring ``MEDSEG_KERNELS=reference|triton``."""
    return forced_backend() or ("triton" if t.is_cuda and triton_available() else "reference")


TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when the Triton kernels should run: backend ``triton`` and one Triton-supported dtype and device.

    float64 (and mixed dtypes or devices) always take the reference, even when ``MEDSEG_KERNELS=triton``.
    """
    first = tensors[0]
    return backend(first) == "triton" and all(
        t.dtype == first.dtype and t.device == first.device and t.dtype in TRITON_DTYPES for t in tensors
    )


def run_triton(module: str, fn: str, *args: Any) -> Any:
    """``medseg_kernels.<module>.<fn>(*args)``, or ``None`` when none of its launch configurations fits the GPU's
    shared memory (``launch.NoLaunchFits``, warned once per kernel and shape): the caller then runs the reference."""
    triton_module = importlib.import_module(f"medseg_kernels.{module}")
    from medseg_kernels.launch import NoLaunchFits

    try:
        return getattr(triton_module, fn)(*args)
    except NoLaunchFits as err:
        if str(err) not in _WARNED:
            _WARNED.add(str(err))
            warnings.warn(f"{err}; running the PyTorch reference instead", RuntimeWarning, stacklevel=3)
        return None


_WARNED: set[str] = set()
