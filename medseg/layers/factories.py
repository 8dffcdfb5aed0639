"""Factories for conv / norm / act / pool / upsample layers in 2D or 3D.

Norm and activation specs follow MONAI's convention: a name (``"batch"``, ``"instance"``, ``"prelu"``) or a
``(name, kwargs)`` pair. Hydra hands lists instead of tuples, so both are accepted.
"""

from __future__ import annotations

from typing import Any

from monai.networks.layers.factories import Act, Conv, Dropout, Norm, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

NormSpec = str | tuple | list | None
ActSpec = str | tuple | list | None
Size = int | tuple[int, ...]  # one value for every axis, or one per axis


def _split_spec(spec: NormSpec | ActSpec) -> tuple[str, dict[str, Any]] | None:
    if spec is None or (isinstance(spec, str) and spec.lower() in ("", "none")):
        return None
    if isinstance(spec, str):
        return spec.lower(), {}
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        return str(spec[0]).lower(), dict(spec[1] or {})
    raise ValueError(f"norm/act spec must be a name or (name, kwargs), got {spec!r}")


def conv_layer(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Size = 3,
    stride: Size = 1,
    padding: Size | None = None,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = True,
    transposed: bool = False,
    output_padding: Size = 0,
) -> nn.Module:
    """A Conv{1,2,3}d with 'same' padding for odd kernels by default, or a ConvTranspose{1,2,3}d (padding 0 by
    default, ``output_padding`` as given). Kernel, stride and paddings are an int or one int per axis."""
    _check_dims(spatial_dims)
    if transposed:
        conv_t = Conv[Conv.CONVTRANS, spatial_dims]
        pad = 0 if padding is None else padding
        return conv_t(
            in_channels, out_channels, kernel_size, stride=stride, padding=pad, output_padding=output_padding, bias=bias
        )
    if padding is None:
        if isinstance(kernel_size, int):
            padding = dilation * (kernel_size - 1) // 2
        else:
            padding = tuple(dilation * (int(k) - 1) // 2 for k in kernel_size)
    conv = Conv[Conv.CONV, spatial_dims]
    return conv(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
    )


def norm_layer(spec: NormSpec, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer from a spec; ``None`` gives identity."""
    _check_dims(spatial_dims)
    parsed = _split_spec(spec)
    if parsed is None:
        return nn.Identity()
    name, kwargs = parsed
    if name == "group":
        kwargs.setdefault("num_groups", min(8, channels))
    if name in ("batch", "instance", "group", "layer", "instance_nvfuser", "localresponse", "syncbatch"):
        return get_norm_layer((name, kwargs), spatial_dims=spatial_dims, channels=channels)
    return Norm[name, spatial_dims](channels, **kwargs)


def act_layer(spec: ActSpec, channels: int | None = None) -> nn.Module:
    """Activation from a spec; ``"prelu"`` gets one slope per channel when ``channels`` is given."""
    parsed = _split_spec(spec)
    if parsed is None:
        return nn.Identity()
    name, kwargs = parsed
    if name == "prelu" and channels is not None:
        kwargs.setdefault("num_parameters", channels)
    if name in ("relu", "leakyrelu", "relu6", "elu"):
        kwargs.setdefault("inplace", True)
    return get_act_layer((name, kwargs)) if kwargs else Act[name]()


def pool_layer(kind: str, spatial_dims: int, kernel_size: Size = 2, ceil_mode: bool = False) -> nn.Module:
    """Down-sampling pool: ``"max"`` or ``"avg"``, kernel = stride (an int or one per axis)."""
    _check_dims(spatial_dims)
    pools = {"max": Pool.MAX, "avg": Pool.AVG}
    if kind not in pools:
        raise ValueError(f"pool kind must be one of {sorted(pools)}, got {kind!r}")
    return Pool[pools[kind], spatial_dims](kernel_size=kernel_size, stride=kernel_size, ceil_mode=ceil_mode)


def dropout_layer(spatial_dims: int, p: float) -> nn.Module:
    """Element-wise dropout (``nn.Dropout``) with probability ``p``; identity when ``p`` is 0."""
    _check_dims(spatial_dims)
    return Dropout[Dropout.DROPOUT, spatial_dims](p) if p > 0 else nn.Identity()


def layer_names(kind: str) -> list[str]:
    """The registered names of ``norm`` or ``act`` layers (lower case), for messages about unknown names."""
    factory = {"norm": Norm, "act": Act}[kind]
    return sorted(n.lower() for n in factory.names)


def upsample_layer(spatial_dims: int, scale: float | tuple[float, ...] = 2, mode: str = "linear") -> nn.Module:
    """Parameter-free upsampling (``linear`` → bi/trilinear, or ``nearest``) by ``scale`` (one or one per axis)."""
    _check_dims(spatial_dims)
    if mode == "linear":
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]
        return nn.Upsample(scale_factor=scale, mode=mode, align_corners=False)
    return nn.Upsample(scale_factor=scale, mode=mode)


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
