"""Plain convolution blocks: conv → norm → act (→ dropout), and the U-Net double conv."""

from __future__ import annotations

import torch
from torch import nn

from medseg.layers import ActSpec, NormSpec, act_layer, conv_layer, dropout_layer, norm_layer


class ConvNormAct(nn.Sequential):
    """conv(k, stride) → norm → act → dropout; the conv has no bias when a norm follows it."""

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
        dilation: int = 1,
        groups: int = 1,
        bias: bool | None = None,
    ) -> None:
        has_norm = norm is not None and norm != "none"
        bias = (not has_norm) if bias is None else bias
        layers: list[nn.Module] = [
            conv_layer(
                spatial_dims,
                in_channels,
                out_channels,
                kernel_size,
                stride,
                dilation=dilation,
                groups=groups,
                bias=bias,
            ),
            norm_layer(norm, spatial_dims, out_channels),
            act_layer(act, out_channels),
        ]
        if dropout > 0:
            layers.append(dropout_layer(spatial_dims, dropout))
        super().__init__(*[m for m in layers if not isinstance(m, nn.Identity)])


class DoubleConv(nn.Module):
    """Two ConvNormAct units (the classic U-Net block); the first carries the stride."""

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
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        common = dict(spatial_dims=spatial_dims, kernel_size=kernel_size, norm=norm, act=act, bias=bias)
        self.conv1 = ConvNormAct(in_channels, out_channels, stride=stride, dropout=dropout, **common)  # type: ignore[arg-type]
        self.conv2 = ConvNormAct(out_channels, out_channels, **common)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, *S) → (B, C_out, *S / stride)
        return self.conv2(self.conv1(x))
