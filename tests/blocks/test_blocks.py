import pytest
import torch
from torch import nn

from medseg.blocks import AttentionGate, ConvNormAct, DeepSupervisionHeads, DoubleConv, InputPyramid, ResidualBlock


def _backward_ok(module: nn.Module, out) -> None:
    outs = out if isinstance(out, (list, tuple)) else [out]
    sum((o.float() ** 2).mean() for o in outs).backward()
    params = list(module.named_parameters())
    assert params, "module has no parameters"
    for name, p in params:
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has non-finite gradient"


def _x(dims: int, c: int, s: int = 8, b: int = 2) -> torch.Tensor:
    return torch.randn(b, c, *[s] * dims)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_double_conv(dims, stride):
    block = DoubleConv(3, 6, spatial_dims=dims, stride=stride, norm="instance", act="prelu", dropout=0.1)
    out = block(_x(dims, 3))
    assert out.shape == (2, 6, *[8 // stride] * dims)
    _backward_ok(block, out)


def test_conv_norm_act_bias_only_without_norm():
    with_norm = ConvNormAct(2, 4, spatial_dims=2, norm="batch")
    without = ConvNormAct(2, 4, spatial_dims=2, norm=None)
    assert with_norm[0].bias is None
    assert without[0].bias is not None
    assert isinstance(without[1], nn.ReLU) and len(without) == 2


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("c_in", "stride"), [(4, 1), (3, 1), (3, 2)])
def test_residual_block(dims, c_in, stride):
    block = ResidualBlock(c_in, 4, spatial_dims=dims, stride=stride)
    assert isinstance(block.shortcut, nn.Identity) == (c_in == 4 and stride == 1)
    out = block(_x(dims, c_in))
    assert out.shape == (2, 4, *[8 // stride] * dims)
    assert (out >= 0).all()  # the final ReLU comes after the addition
    _backward_ok(block, out)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("subsample", [2, 1])
@pytest.mark.parametrize("gating_conv", [False, True])
@pytest.mark.parametrize("out_proj", [True, False])
def test_attention_gate_shapes_and_grads(dims, subsample, gating_conv, out_proj):
    gate = AttentionGate(
        4,
        6,
        spatial_dims=dims,
        subsample=subsample,
        gating_conv=gating_conv,
        out_proj=out_proj,
        proj_norm="batch" if subsample == 1 else None,
    )
    x = _x(dims, 4, 8)
    g = _x(dims, 6, 4)  # the coarser level
    out = gate(x, g)
    assert out.shape == x.shape
    _backward_ok(gate, out)


@pytest.mark.parametrize("dims", [2, 3])
def test_attention_gate_same_resolution_gating(dims):
    gate = AttentionGate(4, 6, spatial_dims=dims, subsample=1)
    x = _x(dims, 4, 8)
    assert gate(x, _x(dims, 6, 8)).shape == x.shape  # g on x's grid
    assert gate(x, _x(dims, 6, 4)).shape == x.shape  # g resized to x's grid


def _set_psi(gate: AttentionGate, bias: float) -> None:
    with torch.no_grad():
        gate.psi.weight.zero_()
        gate.psi.bias.fill_(bias)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("subsample", [2, 1])
@pytest.mark.parametrize("gating_conv", [False, True])
def test_attention_gate_alpha_one_passes_x(dims, subsample, gating_conv):
    gate = AttentionGate(4, 6, spatial_dims=dims, subsample=subsample, gating_conv=gating_conv, out_proj=False).eval()
    _set_psi(gate, 50.0)  # α = σ(50) = 1 in float32
    x, g = _x(dims, 4, 8), _x(dims, 6, 4)
    torch.testing.assert_close(gate(x, g), x)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("subsample", [2, 1])
def test_attention_gate_alpha_zero_blocks_x(dims, subsample):
    gate = AttentionGate(4, 6, spatial_dims=dims, subsample=subsample, out_proj=False).eval()
    _set_psi(gate, -50.0)
    x, g = _x(dims, 4, 8) * 10, _x(dims, 6, 4)
    out = gate(x, g)
    assert out.abs().max() < 1e-12
    assert x.abs().max() > 1.0


def test_attention_gate_alpha_is_spatial_and_in_unit_interval():
    torch.manual_seed(0)
    gate = AttentionGate(2, 2, spatial_dims=2, subsample=1, out_proj=False).eval()
    x = torch.ones(1, 2, 8, 8)
    out = gate(x, torch.randn(1, 2, 8, 8))  # out = α·1 = α, the same for both channels
    assert (out > 0).all() and (out < 1).all()
    torch.testing.assert_close(out[:, 0], out[:, 1])
    assert out.std() > 0  # α varies over space with g


def test_attention_gate_default_inter_channels():
    gate = AttentionGate(8, 6, spatial_dims=3)
    assert gate.theta[0].out_channels == 4
    assert gate.theta[0].kernel_size == (2, 2, 2) and gate.theta[0].stride == (2, 2, 2)
    same = AttentionGate(8, 6, spatial_dims=3, subsample=1, inter_channels=3)
    assert same.theta[0].out_channels == 3 and same.theta[0].kernel_size == (1, 1, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("subsample", [1, 2])
def test_attention_gate_keeps_bf16_under_cuda_autocast(subsample):
    # CUDA autocast interpolates in fp32; α·x (and the decoder's concatenation after it) must stay bf16
    gate = AttentionGate(8, 16, spatial_dims=3, subsample=subsample, out_proj=False).cuda()
    x = torch.randn(2, 8, 16, 16, 16, device="cuda", dtype=torch.bfloat16)  # as from an autocast conv
    g = torch.randn(2, 16, 8, 8, 8, device="cuda", dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = gate(x, g)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    _backward_ok(gate, out)


@pytest.mark.parametrize("dims", [2, 3])
def test_input_pyramid(dims):
    pyr = InputPyramid(2, [3, 5, 7], spatial_dims=dims)
    feats = pyr(_x(dims, 2, 16))
    assert [tuple(f.shape) for f in feats] == [(2, c, *[s] * dims) for c, s in ((3, 8), (5, 4), (7, 2))]
    _backward_ok(pyr, feats)


def test_input_pyramid_pools_by_average():
    pyr = InputPyramid(1, [1], spatial_dims=2, kernel_size=1, act=None)
    with torch.no_grad():
        pyr.convs[0][0].weight.fill_(1.0)
        pyr.convs[0][0].bias.zero_()
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(pyr(x)[0], torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))


@pytest.mark.parametrize("dims", [2, 3])
def test_deep_supervision_heads(dims):
    heads = DeepSupervisionHeads([4, 8, 16], 3, spatial_dims=dims)
    feats = [_x(dims, c, s) for c, s in ((4, 8), (8, 4), (16, 2))]
    outs = heads(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 3, *[s] * dims) for s in (8, 4, 2)]
    _backward_ok(heads, outs)
    with pytest.raises(ValueError):
        heads(feats[:2])  # one feature map per head
