"""One configurable U-Net. Every variant in ``configs/model/net/`` is a choice of blocks fed in as factories.

Block factories are callables (Hydra partials) called with the shared vocabulary:
- ``encoder_block / decoder_block / bottleneck(in_channels=, out_channels=, spatial_dims=, norm=, act=, dropout=)``
- ``skip_gate(in_channels=, gate_channels=, spatial_dims=, norm=, act=)`` called as ``gate(skip, coarser_features)``
- ``input_pyramid(in_channels=, channels=, spatial_dims=, act=)`` returning features at /2, /4, …
- ``level_blocks[i]`` (same call as the encoder block) replaces the blocks of one level

The decoder (gates, upsampling, merge, decoder blocks) is built and run by ``medseg.nets.decoder``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medseg.blocks.conv import DoubleConv
from medseg.blocks.multiscale import DeepSupervisionHeads
from medseg.layers import ActSpec, NormSpec, conv_layer, pool_layer
from medseg.nets.decoder import DecoderSpec, Stride, build_decoder, decode

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
        strides: the pooling stride below each level but the bottleneck (``len(channels) - 1`` entries), each an int
            or one int per axis: ``[[1, 2, 2], 2, 2]`` pools in-plane only at the first level (anisotropic data,
            as nnU-Net plans it); the upsampling into a level mirrors it. None: 2 on every axis.
        kernel_sizes: the conv kernel of each level's encoder and decoder blocks (``len(channels)`` entries, finest
            first), each an int or one int per axis (``[1, 3, 3]``: in-plane); None: the blocks' own default (3).
            Blocks that take no ``kernel_size`` are refused when it is set.
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
        strides: Sequence[int | Sequence[int]] | None = None,
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
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
        self.strides = level_strides(strides, depth, spatial_dims)
        kernels = level_kernels(kernel_sizes, depth, spatial_dims)
        levels = _resolve_levels(level_blocks, depth)
        common: dict[str, Any] = dict(spatial_dims=spatial_dims, norm=norm, act=act, dropout=dropout)
        enc: BlockFactory = encoder_block or DoubleConv
        n_pyr = (depth - 1 if pyramid_levels is None else pyramid_levels) if input_pyramid else 0
        if not 0 <= n_pyr <= depth:
            raise ValueError(f"model.net.pyramid_levels must be in [0, {depth}], got {n_pyr}")
        if n_pyr and any(s != 2 for s in self.strides[:n_pyr]):
            raise ValueError(
                f"model.net.input_pyramid halves the image on every axis: it needs model.net.strides=2 at the "
                f"{n_pyr} pyramid levels, got {self.strides[:n_pyr]} (set model/net/input_pyramid=null)"
            )
        self.pyramid = None
        if input_pyramid is not None and n_pyr > 0:
            self.pyramid = input_pyramid(
                in_channels=in_channels, channels=ch[1 : n_pyr + 1], spatial_dims=spatial_dims, act=act
            )
        self.pools = None
        if downsample != "conv":
            self.pools = nn.ModuleList(pool_layer(downsample, spatial_dims, s) for s in self.strides)  # type: ignore[arg-type]
        self.encoders = nn.ModuleList()
        for i in range(depth + 1):
            c_in = in_channels if i == 0 else ch[i - 1] + (ch[i] if i <= n_pyr else 0)
            factory = levels.get(i) or ((bottleneck or enc) if i == depth else enc)
            extra: dict[str, Any] = {"stride": self.strides[i - 1]} if (downsample == "conv" and i > 0) else {}
            extra |= _kernel_kwargs(factory, kernels, i)
            self.encoders.append(factory(in_channels=c_in, out_channels=ch[i], **extra, **common))
        decoders = [levels.get(i) or decoder_block or enc for i in range(depth)]
        self.decoder = DecoderSpec(
            spatial_dims, ch, list(up_channels or ch[:-1]), self.strides, upsample, up_kernel_size, up_act, merge,
            decoder_from,
        )  # fmt: skip
        block_kwargs = [_kernel_kwargs(decoders[i], kernels, i) for i in range(depth)]
        # with decoder_from=concat a level's block feeds only its head: levels without a head get no block
        n_blocks = depth if decoder_from == "block" else deep_supervision + 1
        self.gates, self.ups, self.decoders = build_decoder(
            self.decoder, decoders, skip_gate, gated_levels, common, block_kwargs, n_blocks
        )
        self.head = conv_layer(spatial_dims, ch[0], out_channels, 1, bias=True)
        self.ds_heads = None
        if deep_supervision:
            self.ds_heads = DeepSupervisionHeads(ch[1 : deep_supervision + 1], out_channels, spatial_dims)
        self.register_load_state_dict_pre_hook(_drop_headless_blocks)
        self.memory_format: torch.memory_format | None = None
        if channels_last:
            self.memory_format = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
            self.to(memory_format=self.memory_format)  # type: ignore[call-overload]  # torch accepts it

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

    @classmethod
    def patch_divisor(cls, config: Mapping[str, Any]) -> list[int]:
        """What every patch axis must be divisible by for a net of ``config`` (the ``model.net`` keys): the product
        of the pooling strides along the axis (``2**depth`` with the default strides)."""
        dims = int(config.get("spatial_dims") or 3)
        depth = len(config.get("channels") or (16, 32, 64, 128)) - 1
        out = [1] * dims
        for stride in level_strides(config.get("strides"), depth, dims):
            for axis in range(dims):
                out[axis] *= stride if isinstance(stride, int) else stride[axis]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        # x: (B, C_in, *S) with every S divisible by the product of the strides along its axis (patch_divisor)
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)  # same values, channels-last strides
        pyr = self.pyramid(x) if self.pyramid is not None else []  # [(B, ch[i], *S/2^i) for i = 1..n_pyr]
        skips: list[torch.Tensor] = []
        h = x
        for i, block in enumerate(self.encoders):
            if i > 0:
                h = self.pools[i - 1](h) if self.pools is not None else h  # (B, ch[i-1], *S_i), S_i = S_{i-1}/stride
                if i <= len(pyr):
                    h = torch.cat([pyr[i - 1], h], dim=1)  # (B, ch[i] + ch[i-1], *S_i)
            h = block(h)  # (B, ch[i], *S_i)
            skips.append(h)
        h = skips.pop()  # bottleneck (B, ch[depth], *S_depth)
        outs = decode(self.decoder, h, skips, self.gates, self.ups, self.decoders)  # [(B, ch[i], *S_i)], coarsest first
        logits = self.head(outs[-1])  # (B, out_channels, *S)
        if self.ds_heads is None or not self.training:
            return logits
        coarse = outs[-2 : -self.deep_supervision - 2 : -1]  # decoder levels 1..ds, finest first
        return [logits, *self.ds_heads(coarse)]  # [(B, out, *S), (B, out, *S_1), ...]


def level_strides(strides: Sequence[Any] | None, depth: int, spatial_dims: int) -> list[Stride]:
    """The pooling stride below each of the ``depth`` upper levels: an int when it is the same on every axis (2 when
    ``strides`` is None), else one int per axis."""
    if strides is None:
        return [2] * depth
    if len(strides) != depth:
        raise ValueError(
            f"model.net.strides needs {depth} entries (one per pooling; model.net.channels has {depth + 1} levels), "
            f"got {list(strides)}"
        )
    return [_per_axis("model.net.strides", s, spatial_dims) for s in strides]


def level_kernels(kernel_sizes: Sequence[Any] | None, depth: int, spatial_dims: int) -> list[Stride] | None:
    """The conv kernel of each level's blocks (``depth + 1`` entries, finest first), or None (the blocks' default)."""
    if kernel_sizes is None:
        return None
    if len(kernel_sizes) != depth + 1:
        raise ValueError(
            f"model.net.kernel_sizes needs {depth + 1} entries (one per level of model.net.channels), "
            f"got {list(kernel_sizes)}"
        )
    return [_per_axis("model.net.kernel_sizes", k, spatial_dims) for k in kernel_sizes]


def _per_axis(key: str, value: Any, dims: int) -> Stride:
    per_axis = [int(value)] * dims if isinstance(value, (int, float)) else [int(v) for v in value]
    if len(per_axis) != dims or min(per_axis) < 1:
        raise ValueError(f"{key}: {value!r} must be a positive int or {dims} positive ints (one per axis)")
    return per_axis[0] if len(set(per_axis)) == 1 else tuple(per_axis)


def _kernel_kwargs(factory: BlockFactory, kernels: list[Stride] | None, level: int) -> dict[str, Any]:
    """``{"kernel_size": k}`` for a level's block when its planned kernel differs from the default 3; a block whose
    ``kernel_size`` is not its conv kernel (``conv_kernel_size = False``: a neighbourhood window, a set of depthwise
    kernels) or that takes none is refused then, naming the level."""
    if kernels is None or kernels[level] == 3:
        return {}
    target = getattr(factory, "func", factory)
    try:
        takes = "kernel_size" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes = True
    if not takes or getattr(target, "conv_kernel_size", True) is False:
        name = getattr(target, "__name__", repr(target))
        raise ValueError(
            f"model.net.kernel_sizes: level {level} asks for kernel {kernels[level]}, but its block {name} takes no "
            "conv kernel_size (give that level 3, or another block)"
        )
    return {"kernel_size": kernels[level]}


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


def _drop_headless_blocks(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Load a checkpoint written before ``decoder_from=concat`` stopped building the decoder blocks of levels without
    an output head: those blocks fed nothing, so their weights are dropped instead of failing a strict load."""
    if getattr(module, "decoder_from", None) != "concat":
        return
    built = len(module.decoders)  # type: ignore[arg-type]
    start = prefix + "decoders."
    for key in [k for k in state_dict if k.startswith(start)]:
        level = key[len(start) :].split(".", 1)[0]
        if level.isdigit() and int(level) >= built:
            del state_dict[key]
