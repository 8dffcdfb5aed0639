"""medseg_kernels: Triton kernels for 3D attention with pure-PyTorch references (docs/architecture.md, "Kernels").

Each op has three layers: a float64-capable torch reference (the spec, ``*_ref``), Triton kernels (``*_triton``,
import guarded, helpers shared in ``triton_common``) and registration + dispatch (``torch.library`` custom ops:
``gate_op``, ``global_attn``, ``neighborhood``): CUDA + supported dtype → Triton, anything else → reference;
``MEDSEG_KERNELS=reference|triton`` forces either. On a GPU each Triton launch takes the first of its candidate
configurations whose compiled kernel fits the device's shared memory (``launch``).

Entry modules, one per op family: ``gate.attention_gate`` (fused additive attention gate) and
``attention.global_attention`` (flash attention, dk ≠ dv) / ``attention.neighborhood_attention`` (NATTEN-style
windows, 1-3 axes). The ``*_triton`` modules are imported only when a kernel first runs.
"""

from medseg_kernels.dispatch import backend, triton_available

__all__ = ["backend", "triton_available"]
