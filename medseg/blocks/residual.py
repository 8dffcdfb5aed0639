"""Residual block: two conv units with an identity (or 1×1 projected) shortcut."""

from __future__ import annotations

import torch
from torch import nn

from medseg.blocks.conv import ConvNormAct
from medseg.layers import ActSpec, NormSpec, act_layer


class ResidualBlock(nn.Module):
    """conv-norm-act → conv-norm, plus shortcut, then act (He et al. 2016, pre-addition activation)."""

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
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, spatial_dims, kernel_size, stride, norm, act, dropout)
        self.conv2 = ConvNormAct(out_channels, out_channels, spatial_dims, kernel_size, 1, norm, None)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = ConvNormAct(in_channels, out_channels, spatial_dims, 1, stride, norm, None)
        self.act = act_layer(act, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, *S) → (B, C_out, *S / stride)
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))
