"""Grouped gated attention (GAG) for skip connections (MK-UNet; "LGAG" in EMCAD), 2D and 3D.

W_g, W_x = k×k grouped convs + norm on the gating features g and the skip x; ψ = σ(norm(conv1×1(act(W_g g + W_x x))));
out = x · ψ. When g is on a coarser grid (as the U-Net hands it), W_g runs there and its output is resized to x's grid.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medseg.blocks.gates import resize_to
from medseg.layers import ActSpec, NormSpec, act_layer, conv_layer, norm_layer


class GroupedAttentionGate(nn.Module):
    """GAG: ψ = σ(norm(1×1(act(norm(W_g g) + norm(W_x x))))); out = x · ψ.

    Args:
        in_channels: channels of the skip features x.
        gate_channels: channels of the gating features g (default ``in_channels``).
        spatial_dims: 2 or 3.
        kernel_size: kernel of the grouped convs W_g and W_x.
        inter_channels: width of W_g / W_x outputs (default ``in_channels // 2``, as in MK-UNet / EMCAD).
        groups: groups of W_g / W_x (default ``in_channels // 2``, so each group maps 2 skip channels to 1); reduced
            to a common divisor of each conv's input and output widths when they do not divide.
        norm: norm after W_g, W_x and ψ's conv.
        act: activation on the sum.
    """

    def __init__(
        self,
        in_channels: int,
        gate_channels: int | None = None,
        spatial_dims: int = 3,
        kernel_size: int = 3,
        inter_channels: int | None = None,
        groups: int | None = None,
        norm: NormSpec = "batch",
        act: ActSpec = "relu",
    ) -> None:
        super().__init__()
        gate_channels = gate_channels or in_channels
        inter = inter_channels or max(in_channels // 2, 1)
        groups = groups or max(in_channels // 2, 1)
        self.w_g = self._grouped(spatial_dims, gate_channels, inter, kernel_size, groups, norm)
        self.w_x = self._grouped(spatial_dims, in_channels, inter, kernel_size, groups, norm)
        self.act = act_layer(act, inter)
        self.psi = nn.Sequential(conv_layer(spatial_dims, inter, 1, 1, bias=True), norm_layer(norm, spatial_dims, 1))

    @staticmethod
    def _grouped(dims: int, c_in: int, c_out: int, k: int, groups: int, norm: NormSpec) -> nn.Sequential:
        g = math.gcd(math.gcd(groups, c_in), c_out)
        return nn.Sequential(conv_layer(dims, c_in, c_out, k, groups=g, bias=True), norm_layer(norm, dims, c_out))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # x: (B, Cx, *S) skip features; g: (B, Cg, *Sg) gating features, Sg = S or coarser
        g1 = resize_to(self.w_g(g), x.shape[2:])  # (B, F_int, *S)
        psi = torch.sigmoid(self.psi(self.act(g1 + self.w_x(x))))  # (B, 1, *S)
        return x * psi  # (B, Cx, *S)
