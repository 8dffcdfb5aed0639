"""Dual attention (DANet, Fu et al.; the DAUNet bottleneck of Bouget et al.): position attention (PAM) over all voxels
and channel attention (CAM) over channel affinities, 2D and 3D.

PAM: Q, K = 1×1 convs to C/8, V = 1×1 conv to C; A = softmax(QᵀK) over the N voxels; out = γ·(V Aᵀ) + x, γ = 0 at init.
The attention runs through ``medseg_kernels.attention.global_attention`` (q/k dim C/8 ≠ v dim C), unscaled as in DANet.
CAM: E = X Xᵀ (C×C); A = softmax(max(E) − E); out = γ·(A X) + x, γ = 0 at init.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.blocks.conv import ConvNormAct, DoubleConv
from medseg.layers import ActSpec, NormSpec, conv_layer, dropout_layer
from medseg_kernels.attention import global_attention


class PositionAttention(nn.Module):
    """PAM: global self-attention over the voxels with q/k width ``C // reduction`` and v width C.

    Args:
        in_channels: channels C.
        out_channels: must equal ``in_channels`` when given.
        spatial_dims: 2 or 3.
        reduction: q/k width ``max(C // reduction, 1)`` (8 in DANet).
    """

    def __init__(
        self, in_channels: int, out_channels: int | None = None, spatial_dims: int = 3, reduction: int = 8
    ) -> None:
        super().__init__()
        if out_channels not in (None, in_channels):
            raise ValueError(f"PositionAttention keeps the width, got {in_channels} → {out_channels}")
        qk = max(in_channels // reduction, 1)
        self.query = conv_layer(spatial_dims, in_channels, qk, 1, bias=True)
        self.key = conv_layer(spatial_dims, in_channels, qk, 1, bias=True)
        self.value = conv_layer(spatial_dims, in_channels, in_channels, 1, bias=True)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, *S), N = prod(S)
        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t.flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, C_t)

        out = global_attention(tokens(self.query(x)), tokens(self.key(x)), tokens(self.value(x)), scale=1.0)
        out = out.squeeze(1).transpose(1, 2).reshape(x.shape)  # (B, C, *S)
        return self.gamma * out + x


class ChannelSelfAttention(nn.Module):
    """CAM: attention between channels from their Gram matrix; no weights but γ.

    Args:
        in_channels: channels C (unused but for the width check).
        out_channels: must equal ``in_channels`` when given.
        spatial_dims: 2 or 3 (any works; kept for the shared vocabulary).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, spatial_dims: int = 3) -> None:
        super().__init__()
        if out_channels not in (None, in_channels):
            raise ValueError(f"ChannelSelfAttention keeps the width, got {in_channels} → {out_channels}")
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, *S)
        flat = x.flatten(2)  # (B, C, N)
        energy = torch.bmm(flat, flat.transpose(1, 2))  # (B, C, C)
        attn = torch.softmax(energy.amax(dim=-1, keepdim=True) - energy, dim=-1)  # (B, C, C)
        out = torch.bmm(attn, flat).reshape(x.shape)  # (B, C, *S)
        return self.gamma * out + x


class DualAttention(nn.Module):
    """DAUNet bottleneck: a double conv, then a PAM branch and a CAM branch, summed.

    Each branch: attention → conv k + norm + act → spatial dropout → conv k (Bouget et al.; DANet's head).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        spatial_dims: 2 or 3.
        kernel_size: kernel of the convs.
        norm: norm spec.
        act: activation spec.
        dropout: dropout of the double conv.
        attention_dropout: spatial (channel-wise) dropout in each branch (0.5 in DAUNet).
        reduction: PAM q/k reduction.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int = 3,
        kernel_size: int = 3,
        norm: NormSpec = "batch",
        act: ActSpec = "relu",
        dropout: float = 0.0,
        attention_dropout: float = 0.5,
        reduction: int = 8,
    ) -> None:
        super().__init__()
        self.trunk = DoubleConv(
            in_channels, out_channels, spatial_dims, kernel_size, norm=norm, act=act, dropout=dropout
        )
        self.pam = PositionAttention(out_channels, spatial_dims=spatial_dims, reduction=reduction)
        self.cam = ChannelSelfAttention(out_channels, spatial_dims=spatial_dims)
        self.pam_head, self.cam_head = (
            nn.Sequential(
                ConvNormAct(out_channels, out_channels, spatial_dims, kernel_size, norm=norm, act=act),
                dropout_layer(spatial_dims, attention_dropout),
                conv_layer(spatial_dims, out_channels, out_channels, kernel_size, bias=True),
            )
            for _ in range(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, *S) → (B, C_out, *S)
        h = self.trunk(x)  # (B, C_out, *S)
        return self.pam_head(self.pam(h)) + self.cam_head(self.cam(h))
