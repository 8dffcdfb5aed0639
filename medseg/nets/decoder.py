"""The U-Net's decoder: per level a skip gate, an upsampling, a merge of [upsampled, skip] and a block.

Split out of ``UNet.__init__`` as dynamic-network-architectures does. The modules are returned as the three containers
``UNet`` registers under its own names (``gates``, ``ups``, ``decoders``), so the state_dict keys of checkpoints
written before the split are unchanged, and they are created in the same order (same fixed-seed initialisation;
with ``decoder_from=concat`` the levels without an output head get no block, and ``UNet`` drops such blocks
from older checkpoints when loading).

Per-level geometry: ``strides[i]`` is the pooling between level ``i`` and ``i + 1`` (an int, or one int per axis:
``(1, 2, 2)`` pools in-plane only), so the upsampling into level ``i`` has the same stride.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medseg.layers import ActSpec, act_layer, conv_layer, upsample_layer

BlockFactory = Callable[..., nn.Module]
Stride = int | tuple[int, ...]


@dataclass
class DecoderSpec:
    """How the decoder is wired (the ``UNet`` arguments of the same names).

    Attributes:
        spatial_dims: 2 or 3.
        channels: encoder widths per level, finest first (the last one is the bottleneck).
        up_channels: output widths of the upsampling per level, finest first.
        strides: the pooling stride below each level (``len(channels) - 1`` entries).
        upsample: ``transpose`` or ``linear``.
        up_kernel_size: kernel of the transposed conv along a stride-2 axis (2, or odd: padded to double the size).
        up_act: activation after the upsampling (None: linear).
        merge: ``cat`` or ``add``.
        decoder_from: ``block`` or ``concat`` (what the next level upsamples).
    """

    spatial_dims: int
    channels: list[int]
    up_channels: list[int]
    strides: list[Stride]
    upsample: str = "transpose"
    up_kernel_size: int = 2
    up_act: ActSpec = None
    merge: str = "cat"
    decoder_from: str = "block"

    @property
    def depth(self) -> int:
        return len(self.channels) - 1

    def merged(self, level: int) -> int:
        """Channels of level ``level``'s merged input (``[up, skip]`` concatenated, or their sum)."""
        up, skip = self.up_channels[level], self.channels[level]
        return up + skip if self.merge == "cat" else skip

    def upsampled_from(self, level: int) -> int:
        """Channels of the tensor that level ``level`` upsamples (the coarser level's output)."""
        if level + 1 == self.depth or self.decoder_from == "block":
            return self.channels[level + 1]
        return self.merged(level + 1)


def build_decoder(
    spec: DecoderSpec,
    blocks: Sequence[BlockFactory],
    skip_gate: BlockFactory | None,
    gated_levels: Sequence[int] | None,
    common: dict[str, Any],
    block_kwargs: Sequence[dict[str, Any]] | None = None,
    n_blocks: int | None = None,
) -> tuple[nn.ModuleDict, nn.ModuleList, nn.ModuleList]:
    """``(gates, ups, decoders)`` of a U-Net, finest level first.

    Args:
        spec: the wiring.
        blocks: the decoder block factory of each level.
        skip_gate: factory of the skip gates (None: plain skips).
        gated_levels: which levels get a gate (None: all, when ``skip_gate`` is set).
        common: ``spatial_dims, norm, act, dropout`` handed to every block.
        block_kwargs: extra arguments of each level's block (``kernel_size``), or None.
        n_blocks: how many levels, finest first, get a block (None: all). With ``decoder_from=concat`` a block feeds
            only its level's output head, so levels without a head get none (they would never be trained).
    """
    depth = spec.depth
    if len(spec.up_channels) != depth:
        raise ValueError(f"model.net.up_channels needs {depth} entries, got {spec.up_channels}")
    gates = nn.ModuleDict()
    for i in (range(depth) if gated_levels is None else gated_levels) if skip_gate else ():
        gates[str(i)] = skip_gate(  # type: ignore[misc]
            in_channels=spec.channels[i],
            gate_channels=spec.upsampled_from(i),
            spatial_dims=spec.spatial_dims,
            norm=common["norm"],
            act=common["act"],
        )
    ups = nn.ModuleList(upsampling(spec, i) for i in range(depth))
    extra = block_kwargs or [{}] * depth
    decoders = nn.ModuleList(
        blocks[i](in_channels=spec.merged(i), out_channels=spec.channels[i], **extra[i], **common)
        for i in range(depth if n_blocks is None else n_blocks)
    )
    return gates, ups, decoders


def upsampling(spec: DecoderSpec, level: int) -> nn.Module:
    """The upsampling into ``level`` from the coarser level, by that level's pooling stride."""
    c_in, c_out, stride = spec.upsampled_from(level), spec.up_channels[level], spec.strides[level]
    if spec.upsample == "transpose":
        kernel, pad, out_pad = transposed_geometry(stride, spec.up_kernel_size)
        up = conv_layer(
            spec.spatial_dims, c_in, c_out, kernel, stride=stride, padding=pad, transposed=True, output_padding=out_pad
        )
    elif spec.upsample == "linear":
        scale = stride if isinstance(stride, int) else tuple(float(s) for s in stride)
        up = nn.Sequential(upsample_layer(spec.spatial_dims, scale), conv_layer(spec.spatial_dims, c_in, c_out, 1))
    else:
        raise ValueError(f"model.net.upsample must be transpose or linear, got {spec.upsample!r}")
    return nn.Sequential(up, act_layer(spec.up_act, c_out)) if spec.up_act else up


def transposed_geometry(stride: Stride, k: int) -> tuple[Stride, Stride, Stride]:
    """``(kernel, padding, output_padding)`` of a transposed conv whose output is exactly ``stride`` × its input.

    ``k = 2`` gives kernel = stride (nnU-Net's); an odd ``k`` along a stride-2 axis pads by ``(k - 1) // 2`` and adds
    ``2 + 2·pad − k`` output padding; an axis that is not pooled (stride 1) gets a 1-wide kernel.
    """

    def axis(s: int) -> tuple[int, int, int]:
        if k == 2 or s == 1:
            return s, 0, 0
        if s != 2:
            raise ValueError(f"model.net.up_kernel_size={k} needs strides of 1 or 2, got {s}")
        pad = (k - 1) // 2
        return k, pad, 2 + 2 * pad - k

    if isinstance(stride, int):
        return axis(stride)
    per_axis = [axis(s) for s in stride]
    return tuple(a[0] for a in per_axis), tuple(a[1] for a in per_axis), tuple(a[2] for a in per_axis)


def decode(
    spec: DecoderSpec,
    h: torch.Tensor,
    skips: list[torch.Tensor],
    gates: nn.ModuleDict,
    ups: nn.ModuleList,
    decoders: nn.ModuleList,
) -> list[torch.Tensor]:
    """Run the decoder from the bottleneck ``h`` over ``skips`` (finest first); the block outputs, coarsest first
    (only levels that have a block: with ``decoder_from=concat`` the coarser levels may have none)."""
    outs: list[torch.Tensor] = []
    for i in reversed(range(spec.depth)):
        skip = skips[i]  # (B, ch[i], *S_i)
        if str(i) in gates:
            skip = gates[str(i)](skip, h)
        up = ups[i](h)  # (B, up_ch[i], *S_i)
        merged = torch.cat([up, skip], dim=1) if spec.merge == "cat" else up + skip  # (B, merged ch, *S_i)
        if i < len(decoders):
            out = decoders[i](merged)  # (B, ch[i], *S_i)
            outs.append(out)
        h = out if spec.decoder_from == "block" else merged
    return outs
