"""medseg_kernels: Triton kernels for 3D attention with pure-PyTorch references (see ARCHITECTURE.md "Kernels").

Each op has a float64-capable torch reference (the spec), Triton kernels (import guarded) and dispatch:
CUDA + supported dtype → Triton, anything else → reference. ``MEDSEG_KERNELS=reference|triton`` forces either.
"""

from medseg_kernels.dispatch import backend, triton_available

__all__ = ["backend", "triton_available"]
