"""Res2Net block (Gao et al.): hierarchical residual-like connections inside one block, 2D and 3D.

1×1 conv → s groups x₁…x_s; y₁ = x₁, y₂ = K₂(x₂), y_i = K_i(x_i + y_{i−1}); concat → 1×1 conv + norm → + shortcut → act.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.blocks.conv import ConvNormAct
from medseg.layers import ActSpec, NormSpec, act_layer, pool_layer


class Res2NetBlock(nn.Module):
    """Res2Net bottleneck with ``scale`` groups of width ``ceil(out_channels / scale)``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        spatial_dims: 2 or 3.
        kernel_size: kernel of the K_i convs.
        stride: down-sampling by average pooling at the block input (also feeds the shortcut).
        norm: norm spec.
        act: activation spec.
        dropout: dropout after the output conv.
        scale: number of groups s (4 in the paper).
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
        scale: int = 4,
    ) -> None:
        super().__init__()
        if scale < 2:
            raise ValueError(f"Res2NetBlock needs scale >= 2, got {scale}")
        width = -(-out_channels // scale)
        self.scale, self.width = scale, width
        self.down: nn.Module = pool_layer("avg", spatial_dims, stride) if stride > 1 else nn.Identity()
        self.reduce = ConvNormAct(in_channels, width * scale, spatial_dims, 1, norm=norm, act=act)
        self.convs = nn.ModuleList(
            ConvNormAct(width, width, spatial_dims, kernel_size, norm=norm, act=act) for _ in range(scale - 1)
        )
        self.expand = ConvNormAct(width * scale, out_channels, spatial_dims, 1, norm=norm, act=None, dropout=dropout)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = ConvNormAct(in_channels, out_channels, spatial_dims, 1, norm=norm, act=None)
        self.act = act_layer(act, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, *S) → (B, C_out, *S / stride)
        x = self.down(x)  # (B, C_in, *S')
        parts = torch.split(self.reduce(x), self.width, dim=1)  # s × (B, w, *S')
        ys = [parts[0]]
        for i, conv in enumerate(self.convs, start=1):
            ys.append(conv(parts[i] if i == 1 else parts[i] + ys[-1]))  # (B, w, *S')
        return self.act(self.expand(torch.cat(ys, dim=1)) + self.shortcut(x))  # (B, C_out, *S')
