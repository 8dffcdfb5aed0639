"""Spatial-dims-agnostic layer factories (2D and 3D from one code path); the only place that uses MONAI's
layer factories directly."""

from medseg.layers.factories import (
    ActSpec,
    NormSpec,
    act_layer,
    conv_layer,
    dropout_layer,
    layer_names,
    norm_layer,
    pool_layer,
    upsample_layer,
)

__all__ = [
    "ActSpec",
    "NormSpec",
    "act_layer",
    "conv_layer",
    "dropout_layer",
    "layer_names",
    "norm_layer",
    "pool_layer",
    "upsample_layer",
]
