"""Multi-scale input pyramid and deep-supervision heads."""

from __future__ import annotations

import torch
from torch import nn

from medseg.blocks.conv import ConvNormAct
from medseg.layers import ActSpec, NormSpec, conv_layer, pool_layer


class InputPyramid(nn.Module):
    """Average-pools the image by 2, 4, 8, … and maps each scale to features with a k×k conv + act.

    Args:
        in_channels: image channels.
        channels: output channels per scale, finest (/2) first.
        spatial_dims: 2 or 3.
        kernel_size: conv kernel.
        norm: norm after the conv (none in Abraham & Khan / Turbolift).
        act: activation after the conv.
    """

    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        spatial_dims: int = 3,
        kernel_size: int = 3,
        norm: NormSpec = None,
        act: ActSpec = "relu",
    ) -> None:
        super().__init__()
        self.pool = pool_layer("avg", spatial_dims, 2)
        self.convs = nn.ModuleList(
            ConvNormAct(in_channels, c, spatial_dims, kernel_size, norm=norm, act=act) for c in channels
        )

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        # image: (B, C_in, *S) → [(B, channels[i], *S / 2^(i+1)) for each scale]
        feats = []
        for conv in self.convs:
            image = self.pool(image)
            feats.append(conv(image))
        return feats


class DeepSupervisionHeads(nn.Module):
    """1×1 conv heads mapping decoder features of several levels to class logits."""

    def __init__(self, in_channels: list[int], out_channels: int, spatial_dims: int = 3) -> None:
        super().__init__()
        self.heads = nn.ModuleList(conv_layer(spatial_dims, c, out_channels, 1, bias=True) for c in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        # feats: [(B, in_channels[i], *S_i)] → [(B, out_channels, *S_i)]
        return [head(f) for head, f in zip(self.heads, feats, strict=True)]
