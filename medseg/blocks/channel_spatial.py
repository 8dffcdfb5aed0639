"""Channel and spatial attention (re-weighting) modules, 2D and 3D: CBAM-style channel and spatial attention,
squeeze-excitation, and CBAM (channel then spatial).

Each module maps ``(B, C, *S)`` to the re-weighted input of the same shape. They take ``in_channels`` (and accept an
equal ``out_channels``) so they fit a ``BlockSequence`` after a conv block, e.g. ``[DoubleConv, SqueezeExcitation]``.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.layers import ActSpec, NormSpec, act_layer, conv_layer, norm_layer


def _check_width(in_channels: int, out_channels: int | None) -> None:
    if out_channels is not None and out_channels != in_channels:
        raise ValueError(f"attention keeps the width: in_channels={in_channels} != out_channels={out_channels}")


class ChannelAttention(nn.Module):
    """CBAM channel attention: x · σ(fc₂ act(fc₁ avgpool x) + fc₂ act(fc₁ maxpool x)) with shared 1×1 convs.

    Args:
        in_channels: channels C.
        out_channels: must equal ``in_channels`` when given.
        spatial_dims: 2 or 3.
        reduction: hidden width ``max(C // reduction, 1)``.
        act: hidden activation.
        bias: bias in the two 1×1 convs (MK-UNet / EMCAD use none).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        spatial_dims: int = 3,
        reduction: int = 16,
        act: ActSpec = "relu",
        bias: bool = False,
    ) -> None:
        super().__init__()
        _check_width(in_channels, out_channels)
        hidden = max(in_channels // reduction, 1)
        self.mlp = nn.Sequential(
            conv_layer(spatial_dims, in_channels, hidden, 1, bias=bias),
            act_layer(act, hidden),
            conv_layer(spatial_dims, hidden, in_channels, 1, bias=bias),
        )

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights σ(·) of shape (B, C, 1, …)."""
        dims = tuple(range(2, x.ndim))
        avg = self.mlp(x.mean(dim=dims, keepdim=True))  # (B, C, 1, ...)
        mx = self.mlp(x.amax(dim=dims, keepdim=True))  # (B, C, 1, ...)
        return torch.sigmoid(avg + mx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, *S) → (B, C, *S)
        return x * self.weights(x)


class SpatialAttention(nn.Module):
    """Spatial attention: x · σ(map_norm(conv_k([mean_c x; max_c x]))) (CBAM, SA-UNet, MK-UNet; k = 7).

    Args:
        in_channels: channels C (the module has no per-channel weights).
        out_channels: must equal ``in_channels`` when given.
        spatial_dims: 2 or 3.
        kernel_size: conv kernel over the 2-channel [mean; max] map.
        map_norm: optional norm on the 1-channel map (CBAM uses batch norm; SA-UNet and MK-UNet none). Not named
            ``norm`` on purpose: the network's norm is not meant for this map.
    """

    def __init__(
        self,
        in_channels: int | None = None,
        out_channels: int | None = None,
        spatial_dims: int = 3,
        kernel_size: int = 7,
        map_norm: NormSpec = None,
    ) -> None:
        super().__init__()
        if in_channels is not None:
            _check_width(in_channels, out_channels)
        self.conv = conv_layer(spatial_dims, 2, 1, kernel_size, bias=False)
        self.norm = norm_layer(map_norm, spatial_dims, 1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial weights σ(·) of shape (B, 1, *S)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, *S)
        return torch.sigmoid(self.norm(self.conv(pooled)))  # (B, 1, *S)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, *S) → (B, C, *S)
        return x * self.weights(x)


class SqueezeExcitation(nn.Module):
    """Squeeze-excitation (Hu et al.): x · σ(W₂ act(W₁ GAP(x))).

    Args:
        in_channels: channels C.
        out_channels: must equal ``in_channels`` when given.
        spatial_dims: 2 or 3.
        reduction: hidden width ``max(C // reduction, 1)`` (16 in the paper).
        act: hidden activation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        spatial_dims: int = 3,
        reduction: int = 16,
        act: ActSpec = "relu",
    ) -> None:
        super().__init__()
        _check_width(in_channels, out_channels)
        hidden = max(in_channels // reduction, 1)
        self.fc = nn.Sequential(
            conv_layer(spatial_dims, in_channels, hidden, 1, bias=True),
            act_layer(act, hidden),
            conv_layer(spatial_dims, hidden, in_channels, 1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, *S) → (B, C, *S)
        squeezed = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)  # (B, C, 1, ...)
        return x * torch.sigmoid(self.fc(squeezed))


class CBAM(nn.Module):
    """Convolutional block attention module (Woo et al.): channel attention, then spatial attention.

    Args:
        in_channels: channels C.
        out_channels: must equal ``in_channels`` when given.
        spatial_dims: 2 or 3.
        reduction: channel-attention reduction.
        kernel_size: spatial-attention kernel.
        map_norm: norm of the spatial-attention map (batch in CBAM).
        act: channel-attention hidden activation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        spatial_dims: int = 3,
        reduction: int = 16,
        kernel_size: int = 7,
        map_norm: NormSpec = "batch",
        act: ActSpec = "relu",
    ) -> None:
        super().__init__()
        _check_width(in_channels, out_channels)
        self.channel = ChannelAttention(in_channels, spatial_dims=spatial_dims, reduction=reduction, act=act)
        self.spatial = SpatialAttention(
            in_channels, spatial_dims=spatial_dims, kernel_size=kernel_size, map_norm=map_norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, *S) → (B, C, *S)
        return self.spatial(self.channel(x))
