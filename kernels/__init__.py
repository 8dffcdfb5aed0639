"""medseg_kernels: Triton kernels for 3D attention with pure-PyTorch references (docs/architecture.md, "Kernels").

Each op has a float64-capable torch reference (the spec), Triton kernels (import guarded) and dispatch:
CUDA + supported dtype → Triton, anything else → reference. ``MEDSEG_KERNELS=reference|triton`` forces either.

Ops (each a ``torch.library`` custom op with a Triton forward and backward): ``gate.attention_gate`` (fused additive
attention gate), ``attention.global_attention`` (flash attention, dk ≠ dv) and ``attention.neighborhood_attention``
(NATTEN-style windows, 1-3 axes). The ``*_triton`` modules are imported only when a kernel first runs.
"""

from medseg_kernels.dispatch import backend, triton_available

__all__ = ["backend", "triton_available"]
