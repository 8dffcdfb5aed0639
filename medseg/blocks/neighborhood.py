"""Neighbourhood attention (NAT / NATTEN semantics), 2D and 3D: each voxel attends to the k×k(×k) window around it,
shifted inwards at the borders so every query sees exactly k^d keys; cost linear in the number of voxels.

The attention runs through ``medseg_kernels.attention.neighborhood_attention``. On an axis shorter than the window
(the coarse levels of a small patch) the window shrinks to the axis (and the dilation to 1), i.e. attention becomes
global along that axis; that is the only departure from NATTEN, which raises there. No relative position bias.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.blocks.conv import ConvNormAct
from medseg.layers import ActSpec, NormSpec, act_layer, conv_layer, norm_layer
from medseg_kernels.attention import neighborhood_attention


def fit_window(sizes: tuple[int, ...], kernel_size: int, dilation: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-axis (kernel, dilation) that fit the grid: the dilation drops to 1, then the kernel to the axis length."""
    kernels, dilations = [], []
    for s in sizes:
        d = dilation if s // dilation >= kernel_size else 1
        kernels.append(min(kernel_size, s // d))
        dilations.append(d)
    return tuple(kernels), tuple(dilations)


class NeighborhoodAttention(nn.Module):
    """Multi-head neighbourhood self-attention on a feature map: 1×1 qkv → windowed attention → 1×1 projection.

    Args:
        channels: channels C (in = out), divisible by ``num_heads``.
        spatial_dims: 2 or 3.
        kernel_size: window per axis.
        num_heads: attention heads.
        dilation: window dilation.
    """

    def __init__(
        self, channels: int, spatial_dims: int = 3, kernel_size: int = 3, num_heads: int = 4, dilation: int = 1
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"neighbourhood attention: {channels} channels are not divisible by {num_heads} heads")
        self.heads, self.kernel_size, self.dilation = num_heads, kernel_size, dilation
        self.qkv = conv_layer(spatial_dims, channels, 3 * channels, 1, bias=True)
        self.proj = conv_layer(spatial_dims, channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, *S) → (B, C, *S)
        b, c, *spatial = x.shape
        qkv = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, *spatial)  # (B, 3, h, d, *S)
        q, k, v = qkv.movedim(3, -1).unbind(1)  # each (B, h, *S, d)
        kernel, dilation = fit_window(tuple(spatial), self.kernel_size, self.dilation)
        out = neighborhood_attention(q, k, v, kernel, dilation)  # (B, h, *S, d)
        return self.proj(out.movedim(-1, 2).reshape(x.shape))  # (B, C, *S)


class NeighborhoodAttentionBlock(nn.Module):
    """A U-Net level of neighbourhood attention: conv unit (width/stride change) → pre-norm NA and MLP residuals.

    ``h = ConvNormAct(x); h = h + NA(norm(h)); h = h + MLP(norm(h))`` with a 1×1-conv MLP of ``mlp_ratio``.

    Args:
        in_channels: input channels.
        out_channels: output channels, divisible by ``num_heads``.
        spatial_dims: 2 or 3.
        kernel_size: neighbourhood window per axis (NATTEN's ``kernel_size``; 7 in NAT).
        stride: stride of the conv unit.
        norm: norm spec (conv unit and the two pre-norms).
        act: activation of the conv unit and the MLP.
        dropout: dropout of the conv unit.
        num_heads: attention heads.
        dilation: window dilation.
        mlp_ratio: MLP hidden width / C.
    """

    conv_kernel_size = False  # kernel_size is not a conv kernel: UNet refuses kernel_sizes other than 3 here

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
        num_heads: int = 4,
        dilation: int = 1,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        hidden = max(int(out_channels * mlp_ratio), 1)
        self.conv = ConvNormAct(in_channels, out_channels, spatial_dims, 3, stride, norm, act, dropout)
        self.norm1 = norm_layer(norm, spatial_dims, out_channels)
        self.attn = NeighborhoodAttention(out_channels, spatial_dims, kernel_size, num_heads, dilation)
        self.norm2 = norm_layer(norm, spatial_dims, out_channels)
        self.mlp = nn.Sequential(
            conv_layer(spatial_dims, out_channels, hidden, 1, bias=True),
            act_layer(act, hidden),
            conv_layer(spatial_dims, hidden, out_channels, 1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, *S) → (B, C_out, *S / stride)
        h = self.conv(x)  # (B, C_out, *S')
        h = h + self.attn(self.norm1(h))
        return h + self.mlp(self.norm2(h))
