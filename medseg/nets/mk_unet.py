"""MK-UNet (Rahman & Marculescu): a lightweight multi-kernel U-Net, 2D and 3D, assembled from block factories.

Why a class beside ``UNet``: MK-UNet's decoder is wired differently, not just built from other blocks. Each decoder
stage runs its block *before* upsampling (x·CA(x) → x·SA(x) → block → upsample ×2 → ReLU) and *adds* the gated skip
(``h + GAG(g=h, x=skip)``) instead of concatenating it; the encoder pools after every stage, so the skips are the pooled
features and a fifth decoder stage returns to full resolution without a skip. ``UNet`` concatenates skips and runs its
decoder block after the upsampling, so expressing this would need a second decoder path inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medseg.blocks.channel_spatial import ChannelAttention, SpatialAttention
from medseg.blocks.gates import resize_to
from medseg.blocks.multikernel import MultiKernelInvertedResidual
from medseg.layers import ActSpec, NormSpec, act_layer, conv_layer, pool_layer

BlockFactory = Callable[..., nn.Module]

PRESETS: dict[str, tuple[int, ...]] = {
    "tiny": (4, 8, 16, 24, 32),
    "small": (8, 16, 32, 48, 80),
    "base": (16, 32, 64, 96, 160),
    "medium": (32, 64, 128, 192, 320),
    "large": (64, 128, 256, 384, 512),
}


class MKUNet(nn.Module):
    """MK-UNet: encoder blocks each followed by max-pooling; decoder stages CA → SA → block → up → act → + gate(skip).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes (MK-UNet: 1 with a sigmoid loss).
        preset: width preset ``tiny``, ``small``, ``base``, ``medium`` or ``large``.
        channels: explicit widths per stage, finest first (overrides ``preset``).
        encoder_block: factory of encoder blocks (default: MKIR).
        decoder_block: factory of decoder blocks (default: the encoder factory).
        skip_gate: factory of the skip gate, called ``gate(skip, h)`` (None: plain addition; the ``mk_unet`` config
            chooses GAG).
        channel_attention: factory of the per-stage channel attention (None: off).
        spatial_attention: factory of the spatial attention, one instance shared by all stages (None: off).
        deep_supervision: number of extra heads on the coarser decoder stages (0: off).
        norm: norm spec handed to the blocks and gates.
        act: activation handed to the blocks (ReLU6 in MK-UNet).
        up_act: activation after each upsampling (ReLU in MK-UNet).
        dropout: dropout handed to the blocks.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        preset: str = "base",
        channels: Sequence[int] | None = None,
        encoder_block: BlockFactory | None = None,
        decoder_block: BlockFactory | None = None,
        skip_gate: BlockFactory | None = None,
        channel_attention: BlockFactory | None = ChannelAttention,
        spatial_attention: BlockFactory | None = SpatialAttention,
        deep_supervision: int = 0,
        norm: NormSpec = "batch",
        act: ActSpec = "relu6",
        up_act: ActSpec = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if channels is None and preset not in PRESETS:
            raise ValueError(f"model.net.preset must be one of {sorted(PRESETS)}, got {preset!r}")
        ch = list(channels) if channels is not None else list(PRESETS[preset])
        if len(ch) < 2 or not 0 <= deep_supervision < len(ch):
            raise ValueError(f"MK-UNet needs >= 2 widths and deep_supervision in [0, {len(ch) - 1}], got {ch}")
        self.spatial_dims, self.deep_supervision = spatial_dims, deep_supervision  # read by the training module
        common: dict[str, Any] = dict(spatial_dims=spatial_dims, norm=norm, act=act, dropout=dropout)
        enc = encoder_block or MultiKernelInvertedResidual
        dec = decoder_block or enc
        self.encoders = nn.ModuleList(
            enc(in_channels=c_in, out_channels=c, **common) for c_in, c in zip([in_channels, *ch], ch, strict=False)
        )
        self.pool = pool_layer("max", spatial_dims, 2, ceil_mode=True)
        dec_out = [*ch[-2::-1], ch[0]]  # coarsest stage first; the last stage keeps ch[0]
        self.decoders = nn.ModuleList(
            dec(in_channels=c_in, out_channels=c, **common) for c_in, c in zip(ch[::-1], dec_out, strict=True)
        )
        self.channel_att = nn.ModuleList(
            channel_attention(in_channels=c, spatial_dims=spatial_dims) if channel_attention else nn.Identity()
            for c in ch[::-1]
        )
        self.spatial_att = spatial_attention(spatial_dims=spatial_dims) if spatial_attention else nn.Identity()
        self.up_act = act_layer(up_act)
        self.gates = nn.ModuleList(
            skip_gate(in_channels=c, gate_channels=c, spatial_dims=spatial_dims, norm=norm)
            if skip_gate
            else nn.Identity()
            for c in dec_out[:-1]
        )
        self.use_gates = skip_gate is not None
        self.head = conv_layer(spatial_dims, ch[0], out_channels, 1, bias=True)
        self.ds_heads = nn.ModuleList(
            conv_layer(spatial_dims, c, out_channels, 1, bias=True) for c in dec_out[-2 : -deep_supervision - 2 : -1]
        )

    @classmethod
    def patch_divisor(cls, config: Mapping[str, Any]) -> list[int]:
        """Any patch size works (pooling rounds up, upsampling returns to each skip's size): 1 on every axis. MK-UNet
        pools by 2 on every axis: it takes no per-level ``strides`` (``medseg plan`` says so for anisotropic data)."""
        return [1] * int(config.get("spatial_dims") or 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        # x: (B, C_in, *S), any S (pooling rounds up; upsampling goes back to each skip's exact size)
        skips: list[torch.Tensor] = []
        h = x
        for block in self.encoders:
            h = self.pool(block(h))  # (B, ch[i], *S/2^(i+1))
            skips.append(h)
        h = skips.pop()  # (B, ch[-1], *S/2^L)
        outs: list[torch.Tensor] = []
        for i, block in enumerate(self.decoders):
            h = self.spatial_att(self.channel_att[i](h))  # (B, C, *S_h), re-weighted
            target = skips[-1 - i] if i < len(self.gates) else x  # the next finer grid
            h = self.up_act(resize_to(block(h), target.shape[2:]))  # (B, C_out, *S_target)
            if i < len(self.gates):
                h = h + (self.gates[i](target, h) if self.use_gates else target)  # additive (gated) skip
            outs.append(h)
        logits = self.head(h)  # (B, out_channels, *S)
        if not self.deep_supervision or not self.training:
            return logits
        coarse = outs[-2 : -self.deep_supervision - 2 : -1]  # stage outputs at /2, /4, ..., finest first
        return [logits, *(head(f) for head, f in zip(self.ds_heads, coarse, strict=True))]
