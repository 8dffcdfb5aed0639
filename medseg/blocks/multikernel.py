"""Multi-kernel blocks of MK-UNet (Rahman & Marculescu): the multi-kernel depth-wise conv (MKDC) and the multi-kernel
inverted residual (MKIR), 2D and 3D.

MKIR: 1×1 conv (C_in → e·C_in) + norm + act → MKDC (parallel depth-wise k×k convs, k ∈ {1, 3, 5}, each + norm + act,
summed) → channel shuffle (groups = gcd(e·C_in, C_out)) → 1×1 conv → C_out + norm → + shortcut (identity, or a 1×1 conv
when the width or the stride changes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from medseg.blocks.conv import ConvNormAct
from medseg.layers import ActSpec, NormSpec, dropout_layer


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: (B, g·n, *S) viewed as (B, g, n, *S), transposed to (B, n, g, *S), flattened."""
    if groups <= 1:
        return x
    b, c = x.shape[:2]
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible into {groups} groups")
    spatial = x.shape[2:]
    return x.view(b, groups, c // groups, *spatial).transpose(1, 2).reshape(b, c, *spatial)


class MultiKernelDepthwiseConv(nn.Module):
    """MKDC: parallel depth-wise convs of several kernel sizes, each + norm + act, summed.

    Args:
        channels: channels (in = out; depth-wise).
        spatial_dims: 2 or 3.
        kernel_size: the kernel sizes of the parallel branches.
        stride: stride of every branch.
        norm: norm after each branch.
        act: activation after each branch.
    """

    def __init__(
        self,
        channels: int,
        spatial_dims: int = 3,
        kernel_size: Sequence[int] = (1, 3, 5),
        stride: int = 1,
        norm: NormSpec = "batch",
        act: ActSpec = "relu6",
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            ConvNormAct(channels, channels, spatial_dims, k, stride, norm, act, groups=channels) for k in kernel_size
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, *S) → (B, C, *S / stride)
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class MultiKernelInvertedResidual(nn.Module):
    """MKIR block (see the module docstring); 2D or 3D from ``spatial_dims``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        spatial_dims: 2 or 3.
        kernel_size: kernel sizes of the MKDC branches (an int gives one branch).
        stride: stride of the depth-wise convs (and of the projected shortcut).
        norm: norm spec.
        act: activation of the expansion and the MKDC branches (ReLU6 in MK-UNet).
        dropout: dropout after the output projection (0: none).
        expansion: expansion factor e of the hidden width.
        shortcut_norm: norm after the 1×1 shortcut projection (none in MK-UNet).
    """

    conv_kernel_size = False  # kernel_size is not a conv kernel: UNet refuses kernel_sizes other than 3 here

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int = 3,
        kernel_size: int | Sequence[int] = (1, 3, 5),
        stride: int = 1,
        norm: NormSpec = "batch",
        act: ActSpec = "relu6",
        dropout: float = 0.0,
        expansion: int = 2,
        shortcut_norm: NormSpec = None,
    ) -> None:
        super().__init__()
        kernels = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
        hidden = in_channels * expansion
        self.expand = ConvNormAct(in_channels, hidden, spatial_dims, 1, norm=norm, act=act)
        self.mkdc = MultiKernelDepthwiseConv(hidden, spatial_dims, kernels, stride, norm, act)
        self.groups = math.gcd(hidden, out_channels)
        self.project = ConvNormAct(hidden, out_channels, spatial_dims, 1, norm=norm, act=None)
        self.drop = dropout_layer(spatial_dims, dropout)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = ConvNormAct(
                in_channels, out_channels, spatial_dims, 1, stride, shortcut_norm, None, bias=shortcut_norm is None
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, *S) → (B, C_out, *S / stride)
        h = self.mkdc(self.expand(x))  # (B, e·C_in, *S / stride)
        h = self.drop(self.project(channel_shuffle(h, self.groups)))  # (B, C_out, *S / stride)
        return h + self.shortcut(x)
