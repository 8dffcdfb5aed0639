"""Kernel tests: without a CUDA device the Triton kernels run under the CPU interpreter (``TRITON_INTERPRET=1``).

The variable is read when a ``@triton.jit`` function is defined, i.e. when ``medseg_kernels.*_triton`` is first
imported; the ops import those modules lazily, so setting it here (before any test runs) is early enough.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
