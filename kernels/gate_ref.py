"""Reference (pure PyTorch) of the fused additive attention gate, 2D and 3D: the spec of ``medseg::attention_gate``.

Same-resolution-projection form: x (B, Cx, *S) skip features, g (B, Cg, *Sg) gating features, 1×1 projections
W_x (F, Cx) and W_g (F, Cg), bias b (F), ψ (F), b_ψ (1)::

    φ = W_g g + b                        on g's grid Sg (the projection comes first, then the resize)
    z = W_x x + up(φ)                    up = linear resize Sg → S, align_corners=False
    α = sigmoid(ψ · relu(z) + b_ψ)       (B, 1, *S)
    out = x · α

``up`` is separable; along an axis of input size n_in and output size n_out, output position i reads
``src = max((i + 0.5) · n_in / n_out − 0.5, 0)``, ``i0 = floor(src)``, ``i1 = min(i0 + 1, n_in − 1)``,
``λ = src − i0`` and gives ``(1 − λ) · φ[i0] + λ · φ[i1]``: exactly ``F.interpolate(mode="bilinear"/"trilinear",
size=S, align_corners=False)`` (an identity where n_in = n_out). Because the weights sum to one, ``up(W_g g + b) =
W_g up(g) + b``: this is the same-resolution gate ``ψ(relu(W_x x + W_g g + b))`` with g resized to x's grid.

:func:`attention_gate_ref` is the differentiable spec (float64-capable); :func:`attention_gate_bwd_ref` is the
explicit backward (the formulas the Triton kernel implements), used by the op on the reference path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample(t: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Linear resize (B, C, *Sg) → (B, C, *size), align_corners=False; the identity when the sizes match."""
    if tuple(t.shape[2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode={2: "bilinear", 3: "trilinear"}[t.ndim - 2], align_corners=False)


def interp_matrix(n_out: int, n_in: int, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """(n_out, n_in) matrix of the 1D linear resize above (rows sum to one)."""
    i = torch.arange(n_out, device=device, dtype=torch.float64)
    src = ((i + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    lam = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64, device=device)
    rows = torch.arange(n_out, device=device)
    m.index_put_((rows, i0), 1 - lam, accumulate=True)
    m.index_put_((rows, i1), lam, accumulate=True)
    return m.to(dtype)


def _upsample_adjoint(t: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Transpose of :func:`upsample`: (B, C, *S) → (B, C, *size) through the per-axis matrices."""
    for axis, n_in in enumerate(size):
        dim = 2 + axis
        if t.shape[dim] != n_in:
            m = interp_matrix(t.shape[dim], n_in, t.dtype, t.device)  # (n_out, n_in)
            t = torch.movedim(torch.movedim(t, dim, -1) @ m, -1, dim)
    return t


def _proj(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """1×1 projection: w (F, C), t (B, C, *S) → (B, F, *S)."""
    return torch.einsum("fc,bc...->bf...", w, t)


def _bcast(v: torch.Tensor, nd: int) -> torch.Tensor:
    return v.view(1, -1, *([1] * nd))


def check_gate_args(
    x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor, psi: torch.Tensor,
    b_psi: torch.Tensor,
) -> None:  # fmt: skip
    """Raise ValueError unless the shapes form a gate (2D or 3D)."""
    f = w_x.shape[0]
    ok = x.ndim in (4, 5) and g.ndim == x.ndim and g.shape[0] == x.shape[0] and w_x.ndim == w_g.ndim == 2
    ok = ok and w_x.shape[1] == x.shape[1] and w_g.shape == (f, g.shape[1]) and b.shape == (f,) == psi.shape
    if not (ok and b_psi.numel() == 1):
        raise ValueError(
            "expected x (B, Cx, *S), g (B, Cg, *Sg), w_x (F, Cx), w_g (F, Cg), b (F,), psi (F,), b_psi (1,); got "
            f"{[tuple(t.shape) for t in (x, g, w_x, w_g, b, psi, b_psi)]}"
        )


def attention_gate_ref(
    x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor, psi: torch.Tensor,
    b_psi: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """out = x · sigmoid(ψ · relu(W_x x + up(W_g g + b)) + b_ψ); see the module docstring."""
    check_gate_args(x, g, w_x, w_g, b, psi, b_psi)
    nd = x.ndim - 2
    phi = upsample(_proj(w_g, g) + _bcast(b, nd), tuple(x.shape[2:]))
    s = torch.einsum("f,bf...->b...", psi, torch.relu(_proj(w_x, x) + phi)).unsqueeze(1) + b_psi.reshape(())
    return x * torch.sigmoid(s)


def attention_gate_bwd_ref(
    dout: torch.Tensor, x: torch.Tensor, g: torch.Tensor, w_x: torch.Tensor, w_g: torch.Tensor, b: torch.Tensor,
    psi: torch.Tensor, b_psi: torch.Tensor,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """(dx, dg, dw_x, dw_g, db, dpsi, db_psi) by the explicit formulas (float32, or float64 for float64 inputs)::

    dα = Σ_c dout·x;  ds = dα·α(1−α);  dψ = Σ ds·relu(z);  db_ψ = Σ ds;  dz = ds·ψ·[z > 0]
    dx = dout·α + W_xᵀ dz;  dW_x = Σ dz xᵀ;  dφ = upᵀ(dz);  db = Σ dφ;  dW_g = Σ dφ gᵀ;  dg = W_gᵀ dφ
    """
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    xs, gs, do = x.to(ct), g.to(ct), dout.to(ct)
    wx, wg, bb, ps, bp = (t.to(ct) for t in (w_x, w_g, b, psi, b_psi))
    nd = x.ndim - 2
    z = _proj(wx, xs) + upsample(_proj(wg, gs) + _bcast(bb, nd), tuple(x.shape[2:]))  # (B, F, *S)
    r = torch.relu(z)
    s = torch.einsum("f,bf...->b...", ps, r).unsqueeze(1) + bp.reshape(())  # (B, 1, *S)
    a = torch.sigmoid(s)
    ds = (do * xs).sum(1, keepdim=True) * a * torch.sigmoid(-s)  # α(1 − α), without cancellation
    dz = ds * _bcast(ps, nd) * (z > 0)  # (B, F, *S)
    dx = do * a + _proj(wx.t(), dz)
    dphi = _upsample_adjoint(dz, tuple(g.shape[2:]))  # (B, F, *Sg)
    dims = [0, *range(2, 2 + nd)]
    grads = (
        dx, _proj(wg.t(), dphi), torch.einsum("bf...,bc...->fc", dz, xs), torch.einsum("bf...,bc...->fc", dphi, gs),
        dphi.sum(dims), (ds * r).sum(dims), ds.sum().reshape(b_psi.shape),
    )  # fmt: skip
    refs = (x, g, w_x, w_g, b, psi, b_psi)
    return tuple(t.to(ref.dtype).contiguous() for t, ref in zip(grads, refs, strict=True))
