"""Zoo networks: parameter counts against the papers, every new net config trains in 2D and 3D, composition from the
command line, MK-UNet presets, and the two generic UNet options the zoo needs (level_blocks, up_kernel_size)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from medseg.blocks import DoubleConv, NeighborhoodAttentionBlock, ResidualBlock
from medseg.config import build, compose_config
from medseg.nets import UNet
from medseg.nets.mk_unet import PRESETS, MKUNet

torch.set_num_threads(1)

ZOO_NETS = ("mk_unet", "ag_unet", "da_unet", "sa_unet", "res2net_unet", "mbd_unet", "na_unet")


def _net(name: str, *overrides: str, in_channels: int = 1, classes: int = 2) -> nn.Module:
    cfg = compose_config(
        "train", [f"model/net={name}", f"data.in_channels={in_channels}", f"data.num_classes={classes}", *overrides]
    )
    return build(cfg.model.net)


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _open_gammas(net: nn.Module) -> None:
    """Attention residual scales start at 0 (their q/k/v then get zero gradients); open them for the grad check."""
    for name, p in net.named_parameters():
        if name.endswith("gamma"):
            with torch.no_grad():
                p.fill_(0.1)


def _train_step(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    net.train()
    out = net(x)
    outs = out if isinstance(out, list) else [out]
    sum((o**2).mean() for o in outs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: no or non-finite gradient"
    return outs


# ------------------------------------------------------------------------------------------- counts vs the papers
@pytest.mark.parametrize(
    ("name", "overrides", "in_channels", "classes", "expected", "tolerance"),
    [
        ("mk_unet", [], 3, 1, 0.316e6, 0.01),  # MK-UNet base, 2D: 0.316M (paper)
        ("sa_unet", [], 3, 1, 0.54e6, 0.03),  # SA-UNet, 16 start filters, 2D: ≈0.54M (paper)
        ("ms_attention_unet", [], 1, 1, 8.16e6, 0.01),  # Turbolift network, 2D 1→1: ≈8.16M (public code)
    ],
)
def test_parameter_counts_match_the_papers(name, overrides, in_channels, classes, expected, tolerance):
    net = _net(name, *overrides, in_channels=in_channels, classes=classes)
    assert net.spatial_dims == 2  # the training module reads it to train on slices
    n = _n_params(net)
    assert abs(n - expected) / expected < tolerance, f"{name}: {n:,} parameters, expected {expected:,.0f}"


def test_mk_unet_parameter_counts_exact():
    """Regression values of our MK-UNet (2D, 3 → 1): base 315,803 (paper 0.316M); every preset builds."""
    assert _n_params(_net("mk_unet", in_channels=3, classes=1)) == 315_803
    counts = [_n_params(_net("mk_unet", f"model.net.preset={p}", in_channels=3, classes=1)) for p in PRESETS]
    assert counts == sorted(counts)  # tiny < small < base < medium < large


# ------------------------------------------------------------------------------- every zoo net trains in 2D and 3D
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", ZOO_NETS)
def test_zoo_net_trains_in_2d_and_3d(name, dims):
    torch.manual_seed(0)
    net = _net(name, f"model.net.spatial_dims={dims}", "model.net.channels=[8,16,32,64]")
    _open_gammas(net)
    x = torch.randn(2, 1, *[16] * dims)
    outs = _train_step(net, x)
    assert outs[0].shape == (2, 2, *[16] * dims)
    for i, o in enumerate(outs[1:], start=1):  # deep supervision: finest first
        assert o.shape == (2, 2, *[16 >> i] * dims)
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 2, *[16] * dims)


@pytest.mark.parametrize("name", ZOO_NETS)
def test_zoo_net_defaults_compose_with_deep_supervision_where_promised(name):
    net = _net(name)
    expects_ds = name in ("ag_unet", "da_unet")
    assert bool(net.deep_supervision) == expects_ds


# ------------------------------------------------------------------------------------- composition by config groups
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    ("net_name", "overrides", "check"),
    [
        (
            "unet",
            ["model/net/encoder_block=mkir", "model/net/skip_gate=gag"],
            lambda n: (
                type(n.encoders[0]).__name__ == "MultiKernelInvertedResidual"
                and all(type(g).__name__ == "GroupedAttentionGate" for g in n.gates.values())
            ),
        ),
        ("unet", ["model/net/bottleneck=dual_attention"], lambda n: type(n.encoders[-1]).__name__ == "DualAttention"),
        (
            "da_unet",
            ["model/net/bottleneck=neighborhood", "model.net.deep_supervision=1"],  # 3 levels: at most 1 extra head
            lambda n: isinstance(n.encoders[-1], NeighborhoodAttentionBlock),
        ),
        ("unet", ["model/net/encoder_block=conv_se"], lambda n: type(n.encoders[1][1]).__name__ == "SqueezeExcitation"),
        ("mk_unet", ["model/net/encoder_block=res2net"], lambda n: type(n.decoders[0]).__name__ == "Res2NetBlock"),
    ],
)
def test_command_line_composition(net_name, overrides, check, dims):
    net = _net(net_name, *overrides, f"model.net.spatial_dims={dims}", "model.net.channels=[8,16,32]")
    assert check(net)
    _open_gammas(net)
    _train_step(net, torch.randn(2, 1, *[8] * dims))


# ------------------------------------------------------------------------------------------------------ MK-UNet
def test_mk_unet_preset_and_channels():
    assert _net("mk_unet", "model.net.preset=tiny").encoders[-1].project[0].out_channels == 32
    net = _net("mk_unet", "model.net.preset=large", "model.net.channels=[4,8]")  # explicit widths win
    assert [e.project[0].out_channels for e in net.encoders] == [4, 8]
    with pytest.raises(ValueError):
        MKUNet(preset="huge")


def test_mk_unet_decoder_wiring_is_additive_and_handles_odd_sizes():
    net = MKUNet(2, 1, 2, channels=[4, 8, 8])
    assert [d.project[0].out_channels for d in net.decoders] == [8, 4, 4]  # stages C_L → … → C_0 → C_0
    assert len(net.gates) == 2 and all(isinstance(g, nn.Identity) for g in net.gates)  # skip_gate=None: plain add
    x = torch.randn(1, 1, 13, 22)  # no divisibility needed: pooling rounds up, upsampling matches each skip
    assert net.eval()(x).shape == (1, 2, 13, 22)


@pytest.mark.parametrize("dims", [2, 3])
def test_mk_unet_deep_supervision(dims):
    net = MKUNet(dims, 1, 3, channels=[4, 8, 16], deep_supervision=2, skip_gate=None)
    outs = _train_step(net, torch.randn(2, 1, *[16] * dims))
    assert [tuple(o.shape[2:]) for o in outs] == [(16,) * dims, (8,) * dims, (4,) * dims]
    assert net.eval()(torch.randn(1, 1, *[16] * dims)).shape == (1, 3, *[16] * dims)


# ------------------------------------------------------------------------------ UNet options used by the zoo configs
def test_unet_level_blocks_replace_encoder_and_decoder_blocks_of_a_level():
    na = functools.partial(NeighborhoodAttentionBlock, num_heads=2)
    net = UNet(2, 1, 2, channels=(4, 8, 8, 16), level_blocks={-1: na, -2: na, 0: ResidualBlock})
    enc = [type(b).__name__ for b in net.encoders]
    dec = [type(b).__name__ for b in net.decoders]
    assert enc == ["ResidualBlock", "DoubleConv", "NeighborhoodAttentionBlock", "NeighborhoodAttentionBlock"]
    assert dec == ["ResidualBlock", "DoubleConv", "NeighborhoodAttentionBlock"]
    _train_step(net, torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError):
        UNet(2, 1, 2, channels=(4, 8), level_blocks={-3: DoubleConv})


def test_na_unet_places_neighbourhood_attention_at_the_two_coarsest_levels():
    net = _net("na_unet")
    is_na = [isinstance(b, NeighborhoodAttentionBlock) for b in net.encoders]
    assert is_na == [False, False, True, True]
    assert [isinstance(b, NeighborhoodAttentionBlock) for b in net.decoders] == [False, False, True]
    assert len(net.gates) == 3  # attention-gated skips


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_unet_up_kernel_size_doubles_exactly(dims, k):
    net = UNet(dims, 1, 2, channels=(4, 8), up_kernel_size=k)
    assert net.ups[0].kernel_size == (k,) * dims
    assert net(torch.randn(1, 1, *[6] * dims)).shape == (1, 2, *[6] * dims)


def test_unet_default_upsampling_is_unchanged():
    net = UNet(3, 1, 2, channels=(4, 8))
    up = net.ups[0]
    assert isinstance(up, nn.ConvTranspose3d) and up.kernel_size == (2, 2, 2) and up.padding == (0, 0, 0)
    assert up.output_padding == (0, 0, 0)
