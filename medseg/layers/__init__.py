"""Spatial-dims-agnostic layer factories (2D and 3D from one code path)."""

from medseg.layers.factories import ActSpec, NormSpec, act_layer, conv_layer, norm_layer, pool_layer, upsample_layer

__all__ = ["ActSpec", "NormSpec", "act_layer", "conv_layer", "norm_layer", "pool_layer", "upsample_layer"]
