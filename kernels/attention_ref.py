"""Pure-PyTorch references (the spec) of the attention ops: differentiable, any device, any float dtype incl. float64.

Layouts follow the heads-first convention of ``torch.nn.functional.scaled_dot_product_attention``:

- ``global_attention_ref``: q, k (B, heads, N, dk); v (B, heads, N, dv) → (B, heads, N, dv). Every query attends to
  all N keys; dk may differ from dv (position attention uses dk = C/8, dv = C).
- ``neighborhood_attention_ref``: q, k, v (B, heads, *S, d) with 1 to 3 spatial dims → (B, heads, *S, d). Each query
  attends to a window of ``kernel_size`` positions per axis, clamped at the borders so every query sees exactly
  ∏ kernel_size keys (NATTEN semantics); with dilation ``r`` the axis is split into the ``r`` interleaved
  sub-grids ``i mod r`` and the window is taken inside the query's sub-grid.

Both apply ``softmax(scale · q·kᵀ)`` over the keys, ``scale`` defaulting to ``dk**-0.5``. Half-precision inputs get
their softmax in float32; the result has the dtype of ``v``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def global_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(scale · q kᵀ) v over all keys; see the module docstring for layouts."""
    _check_heads_layout(q, k, v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, h, N, N)
    return torch.matmul(_softmax(scores, v.dtype), v)  # (B, h, N, dv)


def neighborhood_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
    scale: float | None = None,
) -> torch.Tensor:
    """Windowed attention by gathering the clamped window of every query (memory ~ N · ∏ kernel_size · d)."""
    if not (q.shape == k.shape and k.shape[:-1] == v.shape[:-1]) or q.ndim not in (4, 5, 6):
        raise ValueError(
            f"expected q, k (B, heads, *S, d) and v (B, heads, *S, dv), got {q.shape}, {k.shape}, {v.shape}"
        )
    sizes = tuple(q.shape[2:-1])
    kernel = _per_axis(kernel_size, len(sizes), "kernel_size")
    dil = _per_axis(dilation, len(sizes), "dilation")
    index = window_index(sizes, kernel, dil, q.device)  # (N, K)
    b, h, d = q.shape[0], q.shape[1], q.shape[-1]
    qf = q.reshape(b, h, -1, d)  # (B, h, N, d)
    kg = k.reshape(b, h, -1, d)[:, :, index]  # (B, h, N, K, d)
    vg = v.reshape(b, h, -1, v.shape[-1])[:, :, index]  # (B, h, N, K, dv)
    scale = d**-0.5 if scale is None else scale
    scores = torch.einsum("bhnd,bhnkd->bhnk", qf, kg) * scale  # (B, h, N, K)
    out = torch.einsum("bhnk,bhnkd->bhnd", _softmax(scores, v.dtype), vg)  # (B, h, N, dv)
    return out.reshape(*v.shape)


def window_index(
    sizes: Sequence[int], kernel: Sequence[int], dilation: Sequence[int], device: torch.device | None = None
) -> torch.Tensor:
    """Flat key indices (N, ∏ kernel) of every query's clamped window on a grid of ``sizes`` (row-major)."""
    n = len(sizes)
    flat = torch.zeros([1] * (2 * n), dtype=torch.long, device=device)
    stride = 1
    for axis in reversed(range(n)):
        idx = _axis_window(sizes[axis], kernel[axis], dilation[axis], device)  # (S_axis, k_axis)
        shape = [1] * (2 * n)
        shape[axis], shape[n + axis] = sizes[axis], kernel[axis]
        flat = flat + (idx * stride).view(shape)
        stride *= sizes[axis]
    return flat.reshape(stride, -1)  # (N, K)


def _axis_window(size: int, kernel: int, dilation: int, device: torch.device | None) -> torch.Tensor:
    """Key positions (size, kernel) along one axis: window of ``kernel`` in the query's dilation sub-grid, clamped."""
    if kernel < 1 or dilation < 1 or size // dilation < kernel:
        raise ValueError(f"an axis of {size} cannot hold a window of {kernel} with dilation {dilation}")
    i = torch.arange(size, device=device)
    sub, j = i % dilation, i // dilation  # sub-grid and position inside it
    sub_len = (size - sub + dilation - 1) // dilation
    start = torch.minimum((j - kernel // 2).clamp(min=0), sub_len - kernel)
    return sub[:, None] + dilation * (start[:, None] + torch.arange(kernel, device=device))


def _per_axis(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    values = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != n:
        raise ValueError(f"{name} needs one value per spatial axis ({n}), got {value}")
    return values


def _softmax(scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    low = scores.dtype in (torch.float16, torch.bfloat16)
    return torch.softmax(scores.float() if low else scores, dim=-1).to(dtype)


def _check_heads_layout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    ok = q.ndim == k.ndim == v.ndim == 4 and q.shape[:3] == k.shape[:3] and q.shape[-1] == k.shape[-1]
    if not ok or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"expected q, k (B, heads, N, dk) and v (B, heads, N, dv), got {q.shape}, {k.shape}, {v.shape}"
        )
