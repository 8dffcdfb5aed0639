import pytest
import torch
from torch import nn

from medseg.layers import act_layer, conv_layer, norm_layer, pool_layer, upsample_layer


@pytest.mark.parametrize(
    ("dims", "conv", "convt"), [(2, nn.Conv2d, nn.ConvTranspose2d), (3, nn.Conv3d, nn.ConvTranspose3d)]
)
def test_conv_layer_classes_and_same_padding(dims, conv, convt):
    layer = conv_layer(dims, 2, 5, kernel_size=3)
    assert type(layer) is conv
    assert layer.padding == (1,) * dims
    x = torch.randn(1, 2, *[8] * dims)
    assert layer(x).shape == (1, 5, *[8] * dims)
    dilated = conv_layer(dims, 2, 5, kernel_size=3, dilation=2)
    assert dilated(x).shape == (1, 5, *[8] * dims)
    strided = conv_layer(dims, 2, 5, kernel_size=3, stride=2)
    assert strided(x).shape == (1, 5, *[4] * dims)
    up = conv_layer(dims, 2, 5, kernel_size=2, stride=2, transposed=True)
    assert type(up) is convt
    assert up(x).shape == (1, 5, *[16] * dims)
    assert conv_layer(dims, 2, 5, bias=False).bias is None


@pytest.mark.parametrize(
    ("spec", "dims", "cls"),
    [
        ("batch", 2, nn.BatchNorm2d),
        ("batch", 3, nn.BatchNorm3d),
        ("instance", 2, nn.InstanceNorm2d),
        ("instance", 3, nn.InstanceNorm3d),
        ("group", 3, nn.GroupNorm),
        (("batch", {"momentum": 0.3}), 3, nn.BatchNorm3d),
        (["instance", {"affine": True}], 2, nn.InstanceNorm2d),
        (None, 3, nn.Identity),
        ("none", 2, nn.Identity),
    ],
)
def test_norm_layer_classes(spec, dims, cls):
    layer = norm_layer(spec, dims, 8)
    assert type(layer) is cls


def test_norm_layer_kwargs_are_applied():
    assert norm_layer(("batch", {"momentum": 0.3}), 3, 8).momentum == pytest.approx(0.3)
    assert norm_layer(["instance", {"affine": True}], 2, 8).affine is True
    assert norm_layer("group", 3, 16).num_groups == 8  # default min(8, channels)
    assert norm_layer("group", 3, 4).num_groups == 4
    assert norm_layer(["group", {"num_groups": 2}], 3, 8).num_groups == 2
    assert norm_layer("batch", 2, 6).num_features == 6


@pytest.mark.parametrize(
    ("spec", "cls"),
    [
        ("relu", nn.ReLU),
        ("RELU", nn.ReLU),
        ("leakyrelu", nn.LeakyReLU),
        ("prelu", nn.PReLU),
        ("gelu", nn.GELU),
        (("leakyrelu", {"negative_slope": 0.2}), nn.LeakyReLU),
        (["elu", {"alpha": 0.5}], nn.ELU),
        (None, nn.Identity),
    ],
)
def test_act_layer_classes(spec, cls):
    assert type(act_layer(spec, 4)) is cls


def test_act_layer_kwargs_and_prelu_channels():
    assert act_layer(("leakyrelu", {"negative_slope": 0.2})).negative_slope == pytest.approx(0.2)
    assert act_layer(["elu", {"alpha": 0.5}]).alpha == pytest.approx(0.5)
    prelu = act_layer("prelu", channels=7)
    assert prelu.num_parameters == 7
    assert prelu.weight.shape == (7,)
    assert act_layer("prelu").weight.shape == (1,)  # no channel count → one shared slope
    assert act_layer(("prelu", {"num_parameters": 3}), channels=7).weight.shape == (3,)  # explicit kwargs win


def test_act_layer_values():
    x = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.equal(act_layer("relu")(x.clone()), torch.tensor([0.0, 0.0, 3.0]))
    assert torch.allclose(act_layer(("leakyrelu", {"negative_slope": 0.5}))(x.clone()), torch.tensor([-1.0, 0.0, 3.0]))


@pytest.mark.parametrize("bad", [("relu",), ("relu", {}, "x"), 3])
def test_bad_spec_raises(bad):
    with pytest.raises(ValueError):
        act_layer(bad)
    with pytest.raises(ValueError):
        norm_layer(bad, 3, 4)


@pytest.mark.parametrize(
    ("kind", "dims", "cls"),
    [("max", 2, nn.MaxPool2d), ("max", 3, nn.MaxPool3d), ("avg", 2, nn.AvgPool2d), ("avg", 3, nn.AvgPool3d)],
)
def test_pool_layer(kind, dims, cls):
    layer = pool_layer(kind, dims)
    assert type(layer) is cls
    assert layer(torch.randn(1, 2, *[8] * dims)).shape == (1, 2, *[4] * dims)


def test_pool_values():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(pool_layer("max", 2)(x), torch.tensor([[[[5.0, 7.0], [13.0, 15.0]]]]))
    assert torch.equal(pool_layer("avg", 2)(x), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))


@pytest.mark.parametrize("dims", [2, 3])
def test_upsample_layer(dims):
    x = torch.randn(1, 2, *[4] * dims)
    assert upsample_layer(dims)(x).shape == (1, 2, *[8] * dims)
    assert upsample_layer(dims, mode="nearest")(x).shape == (1, 2, *[8] * dims)
    assert upsample_layer(dims).mode == {2: "bilinear", 3: "trilinear"}[dims]


def test_bad_pool_kind_raises():
    with pytest.raises(ValueError, match="pool kind"):
        pool_layer("min", 3)


@pytest.mark.parametrize("dims", [0, 4])
def test_bad_spatial_dims_raise(dims):
    with pytest.raises(ValueError, match="spatial_dims"):
        conv_layer(dims, 1, 1)
    with pytest.raises(ValueError, match="spatial_dims"):
        pool_layer("max", dims)
    with pytest.raises(ValueError, match="spatial_dims"):
        upsample_layer(dims)


@pytest.mark.parametrize("dims", [0, 4])
def test_norm_layer_bad_spatial_dims_raise(dims):
    # conv/pool/upsample validate spatial_dims; norm_layer must too (MONAI's factory tuple silently picks the 3D
    # class for spatial_dims=0 because it indexes with dims - 1 = -1).
    with pytest.raises(ValueError, match="spatial_dims"):
        norm_layer("batch", dims, 8)
