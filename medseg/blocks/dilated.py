"""Multi-branch dilated residual block (after MBDRes-U-Net), 2D and 3D.

Parallel branches of two k×k convs with dilations d₁, d₂, …, mixed by learned softmax-normalised weights, added to
the (projected) input, activated, then re-weighted by fused channel and spatial attention (CBAM order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.blocks.channel_spatial import CBAM
from medseg.blocks.conv import ConvNormAct
from medseg.layers import ActSpec, NormSpec, act_layer


class MultiBranchDilatedBlock(nn.Module):
    """out = att(act(Σ_b softmax(w)_b · branch_b(x) + shortcut(x))), branch_b = conv(d_b)-norm-act → conv(d_b)-norm.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        spatial_dims: 2 or 3.
        kernel_size: kernel of the branch convs.
        stride: stride of each branch's first conv (and of the projected shortcut).
        norm: norm spec.
        act: activation spec.
        dropout: dropout after each branch's first conv.
        dilations: one branch per dilation.
        attention: apply the fused channel + spatial attention (CBAM) at the end.
        reduction: channel-attention reduction.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int = 3,
        kernel_size: int = 3,
        stride: int = 1,
        norm: NormSpec = "batch",
        act: ActSpec = "relu",
        dropout: float = 0.0,
        dilations: Sequence[int] = (1, 2, 3),
        attention: bool = True,
        reduction: int = 8,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                ConvNormAct(
                    in_channels, out_channels, spatial_dims, kernel_size, stride, norm, act, dropout, dilation=d
                ),
                ConvNormAct(out_channels, out_channels, spatial_dims, kernel_size, 1, norm, None, dilation=d),
            )
            for d in dilations
        )
        self.branch_logits = nn.Parameter(torch.zeros(len(self.branches)))  # equal weights at init
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = ConvNormAct(in_channels, out_channels, spatial_dims, 1, stride, norm, None)
        self.act = act_layer(act, out_channels)
        self.attention: nn.Module = nn.Identity()
        if attention:
            self.attention = CBAM(out_channels, spatial_dims=spatial_dims, reduction=reduction, map_norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, *S) → (B, C_out, *S / stride)
        weights = torch.softmax(self.branch_logits, dim=0)  # (n_branches,)
        mixed = sum(w * branch(x) for w, branch in zip(weights, self.branches, strict=True))  # (B, C_out, *S')
        return self.attention(self.act(mixed + self.shortcut(x)))
