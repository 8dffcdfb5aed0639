"""One configurable U-Net. Every variant in ``configs/model/net/`` is a choice of blocks fed in as factories.

Block factories are callables (Hydra partials) called with the shared vocabulary:
- ``encoder_block / decoder_block / bottleneck(in_channels=, out_channels=, spatial_dims=, norm=, act=, dropout=)``
- ``skip_gate(in_channels=, gate_channels=, spatial_dims=, norm=, act=)`` called as ``gate(skip, coarser_features)``
- ``input_pyramid(in_channels=, channels=, spatial_dims=, act=)`` returning features at /2, /4, …
- ``level_blocks[i]`` (same call as the encoder block) replaces the blocks of one level
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medseg.blocks.conv import DoubleConv
from medseg.blocks.multiscale import DeepSupervisionHeads
from medseg.layers import ActSpec, NormSpec, act_layer, conv_layer, pool_layer, upsample_layer

BlockFactory = Callable[..., nn.Module]


class UNet(nn.Module):
    """Encoder/decoder with optional skip gates, multi-scale input and deep supervision.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: classes (incl. background).
        channels: widths per level, finest first; the last one is the bottleneck.
        encoder_block: factory of encoder blocks (default: DoubleConv).
        decoder_block: factory of decoder blocks (default: the encoder factory).
        bottleneck: factory of the bottleneck block (default: the encoder factory).
        level_blocks: per-level block factories, ``{level: factory}`` with level 0 = finest and negative levels counted
            from the coarsest (-1 = bottleneck, -2 = the level above it); a level's factory builds its encoder block
            and, below the bottleneck, its decoder block, and wins over the other block factories there.
        skip_gate: factory of a gate applied to skips (None: plain skips).
        gated_levels: which skip levels get a gate (0 = finest); None = all.
        input_pyramid: factory of the multi-scale input (None: off).
        pyramid_levels: encoder levels (1..) fed by the pyramid; default all but the bottleneck.
        deep_supervision: number of extra heads on coarser decoder levels (0: off).
        downsample: ``max`` / ``avg`` pooling, or ``conv`` (the block gets stride 2).
        upsample: ``transpose`` (stride-2 transposed conv) or ``linear`` (interpolate + 1×1 conv).
        up_kernel_size: kernel of the transposed conv (2; odd kernels pad to exactly double the size, e.g. 3 as in
            SA-UNet's Keras ``Conv2DTranspose(3, strides=2, padding="same")``).
        up_channels: output widths of the upsampling per level, finest first (default: ``channels[:-1]``).
        up_act: activation after the upsampling (None: linear, as in most U-Nets).
        merge: how a decoder level joins the upsampled features and the (gated) skip: ``cat`` (concatenation, the
            U-Net's) or ``add`` (sum, as in LinkNet/FPN: the decoder block reads ch[i] channels instead of
            up_ch[i] + ch[i], halving its convolution; needs up_channels = channels[:-1]).
        decoder_from: ``block`` (standard: the next level upsamples the decoder block's output) or ``concat``
            (Abraham & Khan / Turbolift: the next level upsamples the concatenation [up, gated skip]; the decoder
            blocks then feed only the output heads, and the blocks of levels without a head are not built).
        norm: norm spec handed to every block.
        act: activation spec handed to every block.
        dropout: dropout handed to every block.
        channels_last: keep weights and activations channels-last (NDHWC / NHWC strides; same values). oneDNN and
            cuDNN convolutions run faster on it: a 3D train step on the 2-core CPU takes ~0.77x the time
            (docs/benchmarks.md). Blocks that ``view`` their input need ``reshape`` to support it.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        encoder_block: BlockFactory | None = None,
        decoder_block: BlockFactory | None = None,
        bottleneck: BlockFactory | None = None,
        level_blocks: Mapping[int, BlockFactory] | None = None,
        skip_gate: BlockFactory | None = None,
        gated_levels: Sequence[int] | None = None,
        input_pyramid: BlockFactory | None = None,
        pyramid_levels: int | None = None,
        deep_supervision: int = 0,
        downsample: str = "max",
        upsample: str = "transpose",
        up_kernel_size: int = 2,
        up_channels: Sequence[int] | None = None,
        up_act: ActSpec = None,
        decoder_from: str = "block",
        merge: str = "cat",
        norm: NormSpec = "batch",
        act: ActSpec = "relu",
        dropout: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        ch = list(channels)
        depth = len(ch) - 1
        _validate(ch, deep_supervision, downsample, decoder_from)
        if merge not in ("cat", "add"):
            raise ValueError(f"model.net.merge must be cat or add, got {merge!r}")
        if merge == "add" and up_channels is not None and list(up_channels) != ch[:-1]:
            raise ValueError(f"model.net.merge=add needs up_channels = channels[:-1] = {ch[:-1]}, got {up_channels}")
        self.merge = merge
        self.spatial_dims, self.depth, self.deep_supervision = spatial_dims, depth, deep_supervision
        self.decoder_from, self.up_kernel_size = decoder_from, up_kernel_size
        levels = _resolve_levels(level_blocks, depth)
        common: dict[str, Any] = dict(spatial_dims=spatial_dims, norm=norm, act=act, dropout=dropout)
        enc: BlockFactory = encoder_block or DoubleConv
        n_pyr = (depth - 1 if pyramid_levels is None else pyramid_levels) if input_pyramid else 0
        if not 0 <= n_pyr <= depth:
            raise ValueError(f"model.net.pyramid_levels must be in [0, {depth}], got {n_pyr}")
        self.pyramid = None
        if input_pyramid is not None and n_pyr > 0:
            self.pyramid = input_pyramid(
                in_channels=in_channels, channels=ch[1 : n_pyr + 1], spatial_dims=spatial_dims, act=act
            )
        self.pool = pool_layer(downsample, spatial_dims) if downsample != "conv" else None
        self.encoders = nn.ModuleList()
        for i in range(depth + 1):
            c_in = in_channels if i == 0 else ch[i - 1] + (ch[i] if i <= n_pyr else 0)
            factory = levels.get(i) or ((bottleneck or enc) if i == depth else enc)
            stride: dict[str, Any] = {"stride": 2} if (downsample == "conv" and i > 0) else {}
            self.encoders.append(factory(in_channels=c_in, out_channels=ch[i], **stride, **common))
        decoders = [levels.get(i) or decoder_block or enc for i in range(depth)]
        self._build_decoder(
            ch, list(up_channels or ch[:-1]), decoders, skip_gate, gated_levels, upsample, up_act, common
        )
        self.head = conv_layer(spatial_dims, ch[0], out_channels, 1, bias=True)
        self.ds_heads = None
        if deep_supervision:
            self.ds_heads = DeepSupervisionHeads(ch[1 : deep_supervision + 1], out_channels, spatial_dims)
        self.memory_format: torch.memory_format | None = None
        if channels_last:
            self.memory_format = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
            self.to(memory_format=self.memory_format)  # type: ignore[call-overload]  # torch accepts it

    def _build_decoder(
        self,
        ch: list[int],
        up_ch: list[int],
        dec: list[BlockFactory],
        skip_gate: BlockFactory | None,
        gated_levels: Sequence[int] | None,
        upsample: str,
        up_act: ActSpec,
        common: dict[str, Any],
    ) -> None:
        if len(up_ch) != self.depth:
            raise ValueError(f"model.net.up_channels needs {self.depth} entries, got {up_ch}")
        # h_ch[i]: channels of the tensor that level i upsamples (the coarser level's output).
        h_ch = [0] * (self.depth + 1)
        h_ch[self.depth] = ch[self.depth]
        for i in reversed(range(self.depth)):
            h_ch[i] = ch[i] if self.decoder_from == "block" else self._merged(up_ch[i], ch[i])
        self.gates = nn.ModuleDict()
        for i in (range(self.depth) if gated_levels is None else gated_levels) if skip_gate else ():
            self.gates[str(i)] = skip_gate(  # type: ignore[misc]
                in_channels=ch[i],
                gate_channels=h_ch[i + 1],
                spatial_dims=self.spatial_dims,
                norm=common["norm"],
                act=common["act"],
            )
        self.ups = nn.ModuleList(self._up(h_ch[i + 1], up_ch[i], upsample, up_act) for i in range(self.depth))
        # with decoder_from=concat a level's block feeds only its head: levels without a head get no block
        n_blocks = self.depth if self.decoder_from == "block" else self.deep_supervision + 1
        self.decoders = nn.ModuleList(
            dec[i](in_channels=self._merged(up_ch[i], ch[i]), out_channels=ch[i], **common) for i in range(n_blocks)
        )

    def drop_deep_supervision(self, n: int) -> None:
        """Remove the ``n`` coarsest deep-supervision heads (a loss weight of 0 would leave them untrained), and with
        ``decoder_from=concat`` the decoder blocks that fed only them. The other parameters keep their names."""
        keep = self.deep_supervision - int(n)
        if not 0 <= keep <= self.deep_supervision:
            raise ValueError(f"cannot drop {n} of {self.deep_supervision} deep-supervision heads")
        self.deep_supervision = keep
        if self.ds_heads is not None:
            del self.ds_heads.heads[keep:]
            if keep == 0:
                self.ds_heads = None
        if self.decoder_from == "concat":
            del self.decoders[keep + 1 :]

    def _merged(self, up: int, skip: int) -> int:
        """Channels of a decoder level's merged input."""
        return up + skip if self.merge == "cat" else skip

    def _up(self, c_in: int, c_out: int, mode: str, act: ActSpec) -> nn.Module:
        if mode == "transpose":
            k = self.up_kernel_size
            pad = (k - 1) // 2  # with output_padding 2 + 2·pad − k the output is exactly twice the input
            up = conv_layer(
                self.spatial_dims,
                c_in,
                c_out,
                k,
                stride=2,
                padding=pad,
                transposed=True,
                output_padding=2 + 2 * pad - k,
            )
        elif mode == "linear":
            up = nn.Sequential(upsample_layer(self.spatial_dims, 2), conv_layer(self.spatial_dims, c_in, c_out, 1))
        else:
            raise ValueError(f"model.net.upsample must be transpose or linear, got {mode!r}")
        return nn.Sequential(up, act_layer(act, c_out)) if act else up

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        # x: (B, C_in, *S) with every S divisible by 2**depth
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)  # same values, channels-last strides
        pyr = self.pyramid(x) if self.pyramid is not None else []  # [(B, ch[i], *S/2^i) for i = 1..n_pyr]
        skips: list[torch.Tensor] = []
        h = x
        for i, block in enumerate(self.encoders):
            if i > 0:
                h = self.pool(h) if self.pool is not None else h  # (B, ch[i-1], *S/2^i)
                if i <= len(pyr):
                    h = torch.cat([pyr[i - 1], h], dim=1)  # (B, ch[i] + ch[i-1], *S/2^i)
            h = block(h)  # (B, ch[i], *S/2^i)
            skips.append(h)
        h = skips.pop()  # bottleneck (B, ch[depth], *S/2^depth)
        outs: list[torch.Tensor] = []
        for i in reversed(range(self.depth)):
            skip = skips[i]  # (B, ch[i], *S/2^i)
            if str(i) in self.gates:
                skip = self.gates[str(i)](skip, h)
            up = self.ups[i](h)  # (B, up_ch[i], *S/2^i)
            merged = torch.cat([up, skip], dim=1) if self.merge == "cat" else up + skip  # (B, merged ch, *S/2^i)
            if i < len(self.decoders):  # concat wiring: levels without a head have no block
                out = self.decoders[i](merged)  # (B, ch[i], *S/2^i)
                outs.append(out)
            h = out if self.decoder_from == "block" else merged
        logits = self.head(outs[-1])  # (B, out_channels, *S)
        if self.ds_heads is None or not self.training:
            return logits
        coarse = outs[-2 : -self.deep_supervision - 2 : -1]  # decoder levels 1..ds, finest first
        return [logits, *self.ds_heads(coarse)]  # [(B, out, *S), (B, out, *S/2), ...]


def _resolve_levels(level_blocks: Mapping[int, BlockFactory] | None, depth: int) -> dict[int, BlockFactory]:
    levels: dict[int, BlockFactory] = {}
    for key, factory in (level_blocks or {}).items():
        level = int(key)
        if not -depth - 1 <= level <= depth:
            raise ValueError(f"model.net.level_blocks: level {level} outside [-{depth + 1}, {depth}]")
        levels[level % (depth + 1)] = factory
    return levels


def _validate(ch: list[int], deep_supervision: int, downsample: str, decoder_from: str) -> None:
    depth = len(ch) - 1
    if depth < 1:
        raise ValueError(f"model.net.channels needs at least 2 levels, got {ch}")
    if not 0 <= deep_supervision < depth:
        raise ValueError(f"model.net.deep_supervision must be in [0, {depth - 1}], got {deep_supervision}")
    if downsample not in ("max", "avg", "conv"):
        raise ValueError(f"model.net.downsample must be max, avg or conv, got {downsample!r}")
    if decoder_from not in ("block", "concat"):
        raise ValueError(f"model.net.decoder_from must be block or concat, got {decoder_from!r}")
