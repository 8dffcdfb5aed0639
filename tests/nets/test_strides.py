"""Per-level pooling strides and kernel sizes (anisotropic U-Nets, as ``medseg plan`` configures them)."""

from __future__ import annotations

import pytest
import torch
from test_nets import NET_NAMES, _default_net_cfg, _tiny_overrides

from medseg.config import build, compose_config
from medseg.nets import UNet
from medseg.nets.mk_unet import MKUNet
from medseg.validate import patch_divisor

ANISO = [[2, 2, 1], [2, 2, 1], 2]  # in-plane pooling twice, then isotropic


def test_in_plane_levels_keep_the_coarse_axis():
    net = UNet(3, 1, 3, channels=[4, 8, 16, 32], strides=ANISO, kernel_sizes=[[3, 3, 1], [3, 3, 1], 3, 3])
    x = torch.randn(2, 1, 16, 16, 4)  # (B, C, x, y, z): z 4× coarser
    feats = []
    hooks = [e.register_forward_hook(lambda m, i, o: feats.append(tuple(o.shape[2:]))) for e in net.encoders]
    out = net(x)
    for h in hooks:
        h.remove()
    assert out.shape == (2, 3, 16, 16, 4)
    assert feats == [(16, 16, 4), (8, 8, 4), (4, 4, 4), (2, 2, 2)]
    assert net.encoders[0].conv1[0].kernel_size == (3, 3, 1)  # in-plane kernels at the anisotropic levels
    assert net.encoders[2].conv1[0].kernel_size == (3, 3, 3)
    assert net.ups[0].kernel_size == (2, 2, 1) and net.ups[0].stride == (2, 2, 1)
    assert net.ups[2].kernel_size == (2, 2, 2)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"spatial_dims": 3, "channels": [8, 16, 32, 64]}, [8, 8, 8]),
        ({"spatial_dims": 3, "channels": [8, 16, 32, 64], "strides": ANISO}, [8, 8, 2]),
        ({"spatial_dims": 2, "channels": [8, 16, 32]}, [4, 4]),
        ({"spatial_dims": 2, "channels": [8, 16, 32], "strides": [[2, 1], 2]}, [4, 2]),
    ],
)
def test_the_patch_divisor_is_the_product_of_the_strides(config, expected):
    assert UNet.patch_divisor(config) == expected
    assert patch_divisor({"_target_": "medseg.nets.UNet", **config}) == expected


def test_mk_unet_takes_any_patch_and_unknown_classes_say_nothing():
    assert MKUNet.patch_divisor({"spatial_dims": 3}) == [1, 1, 1]
    assert patch_divisor({"_target_": "medseg.nets.mk_unet.MKUNet", "spatial_dims": 2}) == [1, 1]
    assert patch_divisor({"_target_": "torch.nn.Identity"}) is None
    assert patch_divisor({"_target_": "no.such.Net"}) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strides": [2, 2]}, "model.net.strides needs 3 entries"),
        ({"strides": [2, [2, 2], 2]}, "must be a positive int or 3 positive ints"),
        ({"kernel_sizes": [3, 3, 3]}, "model.net.kernel_sizes needs 4 entries"),
        ({"strides": [[2, 2, 1], 2, 2], "input_pyramid": lambda **kw: torch.nn.Identity()}, "input_pyramid halves"),
    ],
)
def test_bad_strides_and_kernels_are_refused_by_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(3, 1, 2, channels=[4, 8, 16, 32], **kwargs)


def test_a_block_whose_kernel_size_is_no_conv_kernel_is_refused_when_the_plan_changes_it():
    from functools import partial

    from medseg.blocks import NeighborhoodAttentionBlock

    na = partial(NeighborhoodAttentionBlock, num_heads=2)
    UNet(3, 1, 2, channels=[4, 8, 16], bottleneck=na, kernel_sizes=[[3, 3, 1], 3, 3])  # 3 at its level: fine
    with pytest.raises(ValueError, match=r"level 2 asks for kernel \(3, 3, 1\), but its block NeighborhoodAtt"):
        UNet(3, 1, 2, channels=[4, 8, 16], bottleneck=na, kernel_sizes=[3, 3, [3, 3, 1]])


UNET_NETS = [n for n in NET_NAMES if _default_net_cfg(n)._target_ == "medseg.nets.UNet"]


@pytest.mark.parametrize("name", UNET_NETS)
def test_every_unet_zoo_net_takes_anisotropic_strides_and_kernels(name):
    base = _tiny_overrides(name, 3)
    depth = len(compose_config("train", base).model.net.channels) - 1
    strides = [[2, 2, 1]] + [[2, 2, 2]] * (depth - 1)
    kernels = [[3, 3, 1]] + [[3, 3, 3]] * depth
    extra = [f"model.net.strides={strides}".replace(" ", ""), f"model.net.kernel_sizes={kernels}".replace(" ", "")]
    if compose_config("train", base).model.net.get("input_pyramid") is not None:
        extra.append("~model/net/input_pyramid")  # the pyramid halves every axis: refused above
    net = build(compose_config("train", base + extra).model.net)
    size = [2**depth * 2, 2**depth * 2, 2 ** (depth - 1) * 2]
    assert UNet.patch_divisor(compose_config("train", base + extra).model.net) == [2**depth, 2**depth, 2 ** (depth - 1)]
    net.train()
    out = net(torch.randn(2, 1, *size))
    outs = out if isinstance(out, list) else [out]
    assert tuple(outs[0].shape) == (2, 3, *size)
    sum(o.square().mean() for o in outs).backward()
