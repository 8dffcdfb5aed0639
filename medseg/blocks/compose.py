"""Composition of blocks by config: a sequence of block factories that behaves as one block.

This is how attention modules join a block slot without a new class: e.g. an encoder block "double conv + squeeze-
excitation" is ``BlockSequence(blocks=[DoubleConv partial, SqueezeExcitation partial])`` in YAML.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from medseg.layers import ActSpec, NormSpec


class BlockSequence(nn.Sequential):
    """Blocks applied one after the other; the first maps ``in_channels → out_channels``, the rest keep the width.

    Each block factory is called with ``in_channels``, ``out_channels`` and the network-wide vocabulary this sequence
    received (``spatial_dims, norm, act, dropout``), minus the keys the factory does not take and the keys its own
    config already sets. ``stride`` goes to the first block only. Kernel sizes are per block: set them in each entry.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        blocks: block factories (Hydra partials), applied in order.
        spatial_dims: 2 or 3.
        stride: handed to the first block (1: not handed).
        norm: norm spec handed to blocks that take it.
        act: activation spec handed to blocks that take it.
        dropout: dropout handed to blocks that take it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        blocks: Sequence[Callable[..., nn.Module]],
        spatial_dims: int = 3,
        stride: int = 1,
        norm: NormSpec = "batch",
        act: ActSpec = "relu",
        dropout: float = 0.0,
    ) -> None:
        if not blocks:
            raise ValueError("BlockSequence needs at least one block factory")
        vocab: dict[str, Any] = dict(spatial_dims=spatial_dims, norm=norm, act=act, dropout=dropout)
        modules = []
        for i, factory in enumerate(blocks):
            extra = {"stride": stride} if (i == 0 and stride != 1) else {}
            kwargs = _accepted(factory, {**vocab, **extra})
            if extra and "stride" not in kwargs:
                raise ValueError(f"the first block of a strided BlockSequence must take `stride`: {factory}")
            modules.append(
                factory(in_channels=in_channels if i == 0 else out_channels, out_channels=out_channels, **kwargs)
            )
        super().__init__(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, *S) → (B, C_out, *S / stride)
        return super().forward(x)


def _accepted(factory: Callable[..., nn.Module], vocab: dict[str, Any]) -> dict[str, Any]:
    """The vocabulary entries ``factory`` accepts and does not already fix through its partial keywords."""
    fixed = factory.keywords if isinstance(factory, functools.partial) else {}
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in vocab.items() if k not in fixed and (takes_any or k in params)}
