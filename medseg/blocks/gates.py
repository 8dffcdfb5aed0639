"""Additive attention gates (Oktay et al. 2018) for gating skip connections, 2D and 3D.

Two forms from one class:
- ``subsample=2`` (Oktay): θ = k=stride=2 conv on x, so x is compared with g on g's coarser grid; α is upsampled back.
- ``subsample=1`` (same resolution): θ and φ are 1×1 convs (optionally normed) and g is resized to x's grid.

``fused=True`` (same-resolution form with ReLU, no projection norm, no output projection) computes the gate in one
op, ``medseg_kernels.gate.attention_gate`` (Triton on CUDA, the torch reference elsewhere), with the same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.blocks.conv import ConvNormAct
from medseg.layers import ActSpec, NormSpec, act_layer, conv_layer, norm_layer
from medseg_kernels.gate import attention_gate


def resize_to(t: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Linearly interpolate ``t`` (B, C, *S) to spatial ``size``, keeping ``t``'s dtype; a no-op when sizes match.

    CUDA autocast runs the interpolation in fp32; handing that fp32 result on promoted whatever it met (``α · x``,
    the decoder's concatenation) to fp32 as well: the attention_unet train step at 2 × 128³ on an H100 peaked
    1.3 GiB higher and took 8 % longer (docs/benchmarks.md).
    """
    if tuple(t.shape[2:]) == tuple(size):
        return t
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[t.ndim - 2]
    return F.interpolate(t, size=tuple(size), mode=mode, align_corners=False).to(t.dtype)


class AttentionGate(nn.Module):
    """α = σ(ψ(act(θ·x + φ·g))) ; out = W(α·x) (W = 1×1 conv + norm, or identity).

    Args:
        in_channels: channels of the skip features x.
        gate_channels: channels of the gating features g (from the coarser level).
        spatial_dims: 2 or 3.
        inter_channels: channels of θ/φ (default ``in_channels // 2``).
        subsample: stride of θ (2 = Oktay form, 1 = same-resolution form).
        norm: norm of the output projection W (and of the gating conv).
        act: activation inside the gate (ReLU in Oktay et al.).
        proj_norm: optional norm after θ and φ (the common same-resolution variant uses batch norm).
        gating_conv: apply a 1×1 conv + norm + act to g first (the "gating signal" of Abraham & Khan).
        gating_act: activation of the gating conv (default: ``act``).
        out_proj: apply W = 1×1 conv + norm to α·x.
        fused: run the gate as one fused op (needs ``subsample=1``, ``act="relu"``, ``proj_norm=None``,
            ``out_proj=False``); φ's projection is applied on g's grid and resized (identical maths).
    """

    def __init__(
        self,
        in_channels: int,
        gate_channels: int,
        spatial_dims: int = 3,
        inter_channels: int | None = None,
        subsample: int = 2,
        norm: NormSpec = "batch",
        act: ActSpec = "relu",
        proj_norm: NormSpec = None,
        gating_conv: bool = False,
        gating_act: ActSpec = None,
        out_proj: bool = True,
        fused: bool = False,
    ) -> None:
        super().__init__()
        if fused and not (subsample == 1 and act == "relu" and proj_norm is None and not out_proj):
            raise ValueError("fused=True needs subsample=1, act='relu', proj_norm=None and out_proj=False")
        self.fused = fused
        inter = inter_channels or max(in_channels // 2, 1)
        self.gating: nn.Module = nn.Identity()
        if gating_conv:
            self.gating = ConvNormAct(gate_channels, gate_channels, spatial_dims, 1, norm=norm, act=gating_act or act)
        has_pn = proj_norm is not None
        self.theta = nn.Sequential(
            conv_layer(spatial_dims, in_channels, inter, subsample, subsample, padding=0, bias=False),
            norm_layer(proj_norm, spatial_dims, inter),
        )
        self.phi = nn.Sequential(
            conv_layer(spatial_dims, gate_channels, inter, 1, bias=not has_pn),
            norm_layer(proj_norm, spatial_dims, inter),
        )
        self.act = act_layer(act, inter)
        self.psi = conv_layer(spatial_dims, inter, 1, 1, bias=True)
        self.out: nn.Module = nn.Identity()
        if out_proj:
            self.out = nn.Sequential(
                conv_layer(spatial_dims, in_channels, in_channels, 1, bias=True),
                norm_layer(norm, spatial_dims, in_channels),
            )

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # x: (B, Cx, *S) skip features; g: (B, Cg, *Sg) gating features, Sg = S or S/2
        if self.fused:
            p = dict(self.named_parameters())
            w_x, w_g, psi = p["theta.0.weight"].flatten(1), p["phi.0.weight"].flatten(1), p["psi.weight"].flatten()
            return attention_gate(x, self.gating(g), w_x, w_g, p["phi.0.bias"], psi, p["psi.bias"])
        theta = self.theta(x)  # (B, F_int, *S/subsample)
        phi = resize_to(self.phi(self.gating(g)), theta.shape[2:])  # (B, F_int, *S/subsample)
        alpha = torch.sigmoid(self.psi(self.act(theta + phi)))  # (B, 1, *S/subsample)
        alpha = resize_to(alpha, x.shape[2:])  # (B, 1, *S)
        return self.out(alpha * x)  # (B, Cx, *S)
