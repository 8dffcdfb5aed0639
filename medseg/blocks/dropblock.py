"""DropBlock (Ghiasi et al.) and the SA-UNet conv unit built on it, 2D and 3D.

DropBlock drops contiguous blocks of ``block_size`` voxels per axis (per sample and channel) during training: block
centres are drawn with rate γ = p / block^d · N / N_valid inside the region where a whole block fits, grown to blocks by
max pooling, and the kept activations are rescaled by (#voxels / #kept). Eval mode is the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medseg.layers import ActSpec, NormSpec, act_layer, conv_layer, norm_layer


class DropBlock(nn.Module):
    """Structured dropout of blocks; the block shrinks to an axis shorter than it.

    Args:
        spatial_dims: 1, 2 or 3.
        block_size: block edge in voxels (7 in SA-UNet).
        drop_prob: fraction of activations to drop (1 − keep_prob; SA-UNet keeps 0.9).
    """

    def __init__(self, spatial_dims: int = 3, block_size: int = 7, drop_prob: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0 or block_size < 1:
            raise ValueError(f"DropBlock needs 0 <= drop_prob < 1 and block_size >= 1, got {drop_prob}, {block_size}")
        self.spatial_dims, self.block_size, self.drop_prob = spatial_dims, block_size, drop_prob

    def block_mask(self, x: torch.Tensor) -> torch.Tensor:
        """A {0, 1} keep-mask of x's shape (0 inside dropped blocks)."""
        sizes = x.shape[2:]
        blocks = [min(self.block_size, s) for s in sizes]
        valid = [s - b + 1 for s, b in zip(sizes, blocks, strict=True)]
        gamma = self.drop_prob / math.prod(blocks) * math.prod(sizes) / math.prod(valid)
        seeds = (torch.rand(*x.shape[:2], *valid, device=x.device) < gamma).to(x.dtype)  # (B, C, *valid)
        pad: list[int] = []
        for b in reversed(blocks):  # F.pad wants the last axis first
            pad += [b // 2, b - 1 - b // 2]
        seeds = F.pad(seeds, pad)  # (B, C, *S): centres only where a whole block fits
        pool = getattr(F, f"max_pool{self.spatial_dims}d")
        for axis, b in enumerate(blocks):  # a box max is separable: one 1D max pool per axis
            kernel, padding = [1] * len(blocks), [0] * len(blocks)
            kernel[axis], padding[axis] = b, b // 2
            seeds = pool(seeds, kernel_size=kernel, stride=1, padding=padding)  # even blocks overhang by one
        for axis, s in enumerate(sizes, start=2):
            seeds = seeds.narrow(axis, 0, s)
        return 1.0 - seeds  # (B, C, *S)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, *S) → (B, C, *S)
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = self.block_mask(x)
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))


class DropBlockConv(nn.Module):
    """SA-UNet conv units: ``units`` × (conv k → DropBlock → norm → act); the first conv carries the stride.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        spatial_dims: 2 or 3.
        kernel_size: conv kernel.
        stride: stride of the first conv.
        norm: norm spec.
        act: activation spec.
        dropout: the DropBlock drop probability (SA-UNet: 0.1, i.e. keep 0.9; 0 disables DropBlock).
        block_size: DropBlock block size.
        units: number of conv units (2 in SA-UNet's blocks, 1 around its spatial attention).
        bias: conv bias (default: only without norm; SA-UNet's Keras convs have one).
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
        block_size: int = 7,
        units: int = 2,
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        has_norm = norm is not None and norm != "none"
        layers: list[nn.Module] = []
        for i in range(units):
            c_in = in_channels if i == 0 else out_channels
            s = stride if i == 0 else 1
            layers += [
                conv_layer(
                    spatial_dims, c_in, out_channels, kernel_size, s, bias=not has_norm if bias is None else bias
                ),
                DropBlock(spatial_dims, block_size, dropout),
                norm_layer(norm, spatial_dims, out_channels),
                act_layer(act, out_channels),
            ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, *S) → (B, C_out, *S / stride)
        return self.layers(x)
