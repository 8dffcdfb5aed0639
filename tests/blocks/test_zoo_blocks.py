"""Block zoo breadth: attention references, every new block family, and every composable block config (2D and 3D)."""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from medseg.blocks import (
    CBAM,
    BlockSequence,
    ChannelAttention,
    ChannelSelfAttention,
    DoubleConv,
    DropBlock,
    DropBlockConv,
    DualAttention,
    GroupedAttentionGate,
    MultiBranchDilatedBlock,
    MultiKernelDepthwiseConv,
    MultiKernelInvertedResidual,
    NeighborhoodAttention,
    NeighborhoodAttentionBlock,
    PositionAttention,
    Res2NetBlock,
    SpatialAttention,
    SqueezeExcitation,
    channel_shuffle,
)
from medseg.blocks.neighborhood import fit_window
from medseg.config import config_dir
from medseg_kernels.attention import global_attention, neighborhood_attention
from medseg_kernels.attention_ref import window_index

torch.set_num_threads(1)


def _x(dims: int, c: int, s: int = 8, b: int = 2, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(b, c, *[s] * dims, dtype=dtype)


def _train_step_ok(module: nn.Module, out: torch.Tensor | list[torch.Tensor]) -> None:
    """Backward through ``out``; every parameter gets a finite gradient."""
    outs = out if isinstance(out, (list, tuple)) else [out]
    sum((o.float() ** 2).mean() for o in outs).backward()
    params = list(module.named_parameters())
    assert params, "module has no parameters"
    for name, p in params:
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has non-finite gradient"


# --------------------------------------------------------------------------------------------- attention references
def test_global_attention_matches_sdpa_and_handles_dk_ne_dv():
    q, k = torch.randn(2, 3, 10, 4, dtype=torch.float64), torch.randn(2, 3, 10, 4, dtype=torch.float64)
    v = torch.randn(2, 3, 10, 4, dtype=torch.float64)
    torch.testing.assert_close(global_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    v6 = torch.randn(2, 3, 10, 6, dtype=torch.float64)  # PAM: v width C, q/k width C/8
    scores = torch.einsum("bhnd,bhmd->bhnm", q, k) * 0.7
    expected = torch.einsum("bhnm,bhmd->bhnd", scores.softmax(-1), v6)
    out = global_attention(q, k, v6, scale=0.7)
    assert out.shape == (2, 3, 10, 6) and out.dtype == torch.float64
    torch.testing.assert_close(out, expected)


def test_global_attention_gradcheck_and_half_precision():
    q, k, v = (torch.randn(1, 2, 5, d, dtype=torch.float64, requires_grad=True) for d in (3, 3, 4))
    assert torch.autograd.gradcheck(global_attention, (q, k, v))
    qh, kh, vh = (t.detach().to(torch.bfloat16) for t in (q, k, v))
    out = global_attention(qh, kh, vh)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), global_attention(q, k, v).detach(), atol=3e-2, rtol=3e-2)
    with pytest.raises(ValueError):
        global_attention(q, k, v[:, :, :4])


def _natten_window(size: int, kernel: int, dilation: int, i: int) -> list[int]:
    """NATTEN's window of query i along one axis, written from the definition (independent of window_index)."""
    group = [p for p in range(size) if p % dilation == i % dilation]
    j = group.index(i)
    start = min(max(j - kernel // 2, 0), len(group) - kernel)
    return group[start : start + kernel]


def _masked_attention(q, k, v, kernel, dilation):
    """Neighbourhood attention as global attention with a mask built from ``_natten_window`` (float64 oracle)."""
    sizes = q.shape[2:-1]
    mask = torch.zeros(math.prod(sizes), math.prod(sizes), dtype=torch.bool)
    grid = list(itertools.product(*[range(s) for s in sizes]))
    for n, pos in enumerate(grid):
        windows = [_natten_window(s, kk, d, p) for s, kk, d, p in zip(sizes, kernel, dilation, pos, strict=True)]
        for key in itertools.product(*windows):
            mask[n, grid.index(key)] = True
    assert (mask.sum(1) == math.prod(kernel)).all()  # every query sees exactly prod(kernel) keys
    b, h, d = q.shape[0], q.shape[1], q.shape[-1]
    scores = q.reshape(b, h, -1, d) @ k.reshape(b, h, -1, d).transpose(-1, -2) * d**-0.5
    attn = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return (attn @ v.reshape(b, h, -1, v.shape[-1])).reshape(v.shape)


@pytest.mark.parametrize(
    ("sizes", "kernel", "dilation"),
    [((9,), (3,), (1,)), ((7, 6), (3, 5), (1, 1)), ((8, 7), (3, 3), (2, 2)), ((5, 6, 4), (3, 3, 2), (1, 2, 1))],
)
def test_neighborhood_attention_matches_masked_global_attention(sizes, kernel, dilation):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, *sizes, 3, dtype=torch.float64) for _ in range(3))
    out = neighborhood_attention(q, k, v, kernel, dilation)
    assert out.shape == v.shape
    torch.testing.assert_close(out, _masked_attention(q, k, v, kernel, dilation))


def test_neighborhood_attention_full_window_is_global_and_gradcheck():
    q, k, v = (torch.randn(1, 2, 3, 4, 2, dtype=torch.float64, requires_grad=True) for _ in range(3))
    full = neighborhood_attention(q, k, v, (3, 4))
    flat = [t.reshape(1, 2, 12, 2) for t in (q, k, v)]
    torch.testing.assert_close(full, global_attention(*flat).reshape(full.shape))
    assert torch.autograd.gradcheck(lambda a, b, c: neighborhood_attention(a, b, c, 3, 1), (q, k, v))


def test_neighborhood_window_index_clamps_at_borders():
    index = window_index((5,), (3,), (1,))
    assert index.tolist() == [[0, 1, 2], [0, 1, 2], [1, 2, 3], [2, 3, 4], [2, 3, 4]]
    assert window_index((3, 3), (3, 3), (1, 1)).shape == (9, 9)
    with pytest.raises(ValueError):
        neighborhood_attention(*(torch.randn(1, 1, 4, 2) for _ in range(3)), kernel_size=5)
    with pytest.raises(ValueError):
        neighborhood_attention(*(torch.randn(1, 1, 6, 2) for _ in range(3)), kernel_size=3, dilation=3)


# ------------------------------------------------------------------------------------------------------ multi-kernel
def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 1) is x
    with pytest.raises(ValueError):
        channel_shuffle(x, 4)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("c_in", "c_out", "stride"), [(4, 4, 1), (3, 6, 1), (4, 6, 2)])
def test_mkir_shapes_shortcut_and_grads(dims, c_in, c_out, stride):
    block = MultiKernelInvertedResidual(c_in, c_out, spatial_dims=dims, stride=stride, dropout=0.1)
    assert isinstance(block.shortcut, nn.Identity) == (c_in == c_out and stride == 1)
    assert block.groups == math.gcd(2 * c_in, c_out)
    assert [b[0].kernel_size[0] for b in block.mkdc.branches] == [1, 3, 5]
    assert all(b[0].groups == 2 * c_in for b in block.mkdc.branches)  # depth-wise
    out = block(_x(dims, c_in))
    assert out.shape == (2, c_out, *[8 // stride] * dims)
    _train_step_ok(block, out)


def test_mkdc_sums_branches_and_mkir_parameter_count():
    mkdc = MultiKernelDepthwiseConv(4, spatial_dims=2, kernel_size=(1, 3), norm=None, act=None).eval()
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(mkdc(x), mkdc.branches[0](x) + mkdc.branches[1](x))
    # MKIR(16 → 32), e = 2: expand 16·32 + BN 64; 3 depth-wise (1+9+25)·32 + 3 BN 64; project 32·32 + BN 64;
    # 1×1 shortcut 16·32 + bias 32.
    expected = 16 * 32 + 64 + 35 * 32 + 3 * 64 + 32 * 32 + 64 + 16 * 32 + 32
    assert sum(p.numel() for p in MultiKernelInvertedResidual(16, 32, spatial_dims=2).parameters()) == expected


# -------------------------------------------------------------------------------------- channel / spatial attention
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    "make",
    [
        lambda d: ChannelAttention(8, spatial_dims=d, reduction=4),
        lambda d: SpatialAttention(8, spatial_dims=d, kernel_size=7),
        lambda d: SpatialAttention(8, spatial_dims=d, kernel_size=3, map_norm="batch"),
        lambda d: SqueezeExcitation(8, spatial_dims=d, reduction=4),
        lambda d: CBAM(8, spatial_dims=d, reduction=4),
    ],
)
def test_reweighting_attention_shapes_and_grads(dims, make):
    module = make(dims)
    x = _x(dims, 8)
    out = module(x)
    assert out.shape == x.shape
    _train_step_ok(module, out)


def test_channel_attention_uses_avg_and_max_and_is_in_unit_interval():
    ca = ChannelAttention(4, spatial_dims=2, reduction=2)
    x = torch.rand(1, 4, 6, 6)
    w = ca.weights(x)
    assert w.shape == (1, 4, 1, 1) and ((w > 0) & (w < 1)).all()
    expected = torch.sigmoid(ca.mlp(x.mean((2, 3), keepdim=True)) + ca.mlp(x.amax((2, 3), keepdim=True)))
    torch.testing.assert_close(w, expected)
    assert sum(p.numel() for p in ca.parameters()) == 2 * 4 * 2  # two bias-free 1×1 convs


def test_spatial_attention_is_a_7x7_conv_on_mean_and_max():
    sa = SpatialAttention(spatial_dims=2)
    assert sa.conv.kernel_size == (7, 7) and sa.conv.in_channels == 2 and sa.conv.bias is None
    x = torch.randn(2, 5, 9, 9)
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    torch.testing.assert_close(sa(x), x * torch.sigmoid(F.conv2d(pooled, sa.conv.weight, padding=3)))
    with pytest.raises(ValueError):
        SpatialAttention(4, 8)


def test_squeeze_excitation_weights_are_global_per_channel():
    se = SqueezeExcitation(32, spatial_dims=3).eval()
    assert se.fc[0].out_channels == 2  # r = 16
    x = torch.rand(1, 32, 4, 4, 4) + 0.1
    ratio = se(x) / x
    torch.testing.assert_close(ratio, ratio[..., :1, :1, :1].expand_as(ratio))


# ------------------------------------------------------------------------------------------- grouped gate (GAG)
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("gate_channels", "gate_size"), [(8, 8), (16, 4)])
def test_grouped_attention_gate(dims, gate_channels, gate_size):
    gate = GroupedAttentionGate(8, gate_channels, spatial_dims=dims)
    assert gate.w_x[0].groups == 4 and gate.w_x[0].out_channels == 4  # groups = F_int = C/2 (MK-UNet)
    assert gate.w_g[0].groups == 4
    x, g = _x(dims, 8), _x(dims, gate_channels, gate_size)
    out = gate(x, g)
    assert out.shape == x.shape
    ratio = (out / x).detach()
    assert ((ratio > 0) & (ratio < 1)).all()  # x · ψ with ψ ∈ (0, 1), one ψ for all channels
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    _train_step_ok(gate, out)


# ----------------------------------------------------------------------------------------------- dual attention
def test_position_attention_formula_and_gamma_zero_identity():
    torch.manual_seed(0)
    pam = PositionAttention(16, spatial_dims=3).double()
    assert pam.query.out_channels == pam.key.out_channels == 2 and pam.value.out_channels == 16
    x = torch.randn(2, 16, 3, 4, 2, dtype=torch.float64)
    torch.testing.assert_close(pam(x), x)  # γ = 0 at init
    with torch.no_grad():
        pam.gamma.fill_(0.5)
    q, k, v = (m(x).flatten(2) for m in (pam.query, pam.key, pam.value))  # (B, C', N)
    attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (B, N, N), unscaled as in DANet
    expected = 0.5 * (v @ attn.transpose(1, 2)).reshape(x.shape) + x
    torch.testing.assert_close(pam(x), expected)


def test_channel_self_attention_formula():
    cam = ChannelSelfAttention(4, spatial_dims=2).double()
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(cam(x), x)
    with torch.no_grad():
        cam.gamma.fill_(2.0)
    flat = x.flatten(2)
    energy = flat @ flat.transpose(1, 2)
    attn = torch.softmax(energy.max(-1, keepdim=True).values - energy, -1)
    torch.testing.assert_close(cam(x), 2.0 * (attn @ flat).reshape(x.shape) + x)


@pytest.mark.parametrize("dims", [2, 3])
def test_dual_attention_block(dims):
    block = DualAttention(6, 16, spatial_dims=dims)
    for m in (block.pam, block.cam):
        with torch.no_grad():
            m.gamma.fill_(0.1)  # so the attention weights get non-zero gradients too
    out = block(_x(dims, 6, 4))
    assert out.shape == (2, 16, *[4] * dims)
    _train_step_ok(block, out)


# --------------------------------------------------------------------------------------- neighbourhood attention
def test_fit_window_shrinks_to_small_axes():
    assert fit_window((8, 8, 8), 3, 1) == ((3, 3, 3), (1, 1, 1))
    assert fit_window((2, 8, 1), 3, 2) == ((2, 3, 1), (1, 2, 1))
    assert fit_window((4,), 3, 2) == ((3,), (1,))


def test_neighborhood_module_with_full_window_equals_multihead_global_attention():
    torch.manual_seed(0)
    na = NeighborhoodAttention(8, spatial_dims=2, kernel_size=5, num_heads=2).double()
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)  # window 5 covers the whole 3×4 grid
    qkv = na.qkv(x).reshape(1, 3, 2, 4, 12)  # (B, 3, heads, d, N)
    q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # (B, heads, N, d)
    ref = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(1, 8, 3, 4)
    torch.testing.assert_close(na(x), na.proj(ref))
    with pytest.raises(ValueError):
        NeighborhoodAttention(6, num_heads=4)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_neighborhood_attention_block(dims, stride):
    block = NeighborhoodAttentionBlock(3, 8, spatial_dims=dims, kernel_size=3, stride=stride, num_heads=2, dilation=2)
    out = block(_x(dims, 3, 8))
    assert out.shape == (2, 8, *[8 // stride] * dims)
    _train_step_ok(block, out)


# -------------------------------------------------------------------------------------------------------- Res2Net
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("c_in", "stride"), [(8, 1), (3, 1), (3, 2)])
def test_res2net_block(dims, c_in, stride):
    block = Res2NetBlock(c_in, 8, spatial_dims=dims, stride=stride, dropout=0.1)
    assert block.width == 2 and len(block.convs) == 3
    out = block(_x(dims, c_in))
    assert out.shape == (2, 8, *[8 // stride] * dims)
    _train_step_ok(block, out)


def test_res2net_hierarchy_widens_the_receptive_field():
    """y_i = K_i(x_i + y_{i-1}): with s = 4 and 3×3 convs the block reaches 3 voxels away (one conv reaches 1)."""
    torch.manual_seed(0)
    block = Res2NetBlock(4, 4, spatial_dims=2, scale=4).eval()
    x = torch.randn(1, 4, 11, 11)
    x2 = x.clone()
    x2[0, :, 5, 5] += 10.0
    changed = (block(x2) - block(x)).abs().sum(1)[0] > 1e-6
    rows = changed.any(1).nonzero().flatten()
    assert rows.min() == 2 and rows.max() == 8


# ---------------------------------------------------------------------------------------------- multi-branch dilated
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("attention", [True, False])
def test_multi_branch_dilated_block(dims, attention):
    block = MultiBranchDilatedBlock(3, 8, spatial_dims=dims, dilations=(1, 2), attention=attention)
    assert [b[0][0].dilation[0] for b in block.branches] == [1, 2]
    out = block(_x(dims, 3))
    assert out.shape == (2, 8, *[8] * dims)
    _train_step_ok(block, out)
    assert block.branch_logits.grad.abs().sum() > 0  # the branch weights learn


def test_multi_branch_dilated_weights_mix_branches():
    block = MultiBranchDilatedBlock(2, 2, spatial_dims=2, dilations=(1, 3), attention=False, act=None).eval()
    x = torch.randn(1, 2, 9, 9)
    with torch.no_grad():
        block.branch_logits.copy_(torch.tensor([0.0, -1e4]))  # all weight on the first branch
    torch.testing.assert_close(block(x), block.branches[0](x) + x)


# ------------------------------------------------------------------------------------------------------ DropBlock
def test_dropblock_drops_whole_blocks_at_the_requested_rate():
    torch.manual_seed(0)
    drop = DropBlock(spatial_dims=2, block_size=3, drop_prob=0.2)
    x = torch.ones(8, 4, 32, 32)
    keep = drop.block_mask(x)
    dropped = (1 - keep).flatten(0, 1).unsqueeze(1)  # (N, 1, 32, 32)
    assert abs(dropped.mean().item() - 0.2) < 0.05
    # the dropped set is a union of 3×3 blocks: it equals its morphological opening
    eroded = 1 - F.max_pool2d(1 - dropped, 3, 1, 1)
    opened = F.max_pool2d(eroded, 3, 1, 1)
    torch.testing.assert_close(opened, dropped)
    out = drop.train()(x)
    assert torch.isclose(out.mean(), torch.tensor(1.0), atol=1e-5)  # rescaled by #voxels / #kept
    assert set(out.unique().tolist()) <= {0.0, out.max().item()}
    assert drop.eval()(x) is x


@pytest.mark.parametrize("dims", [2, 3])
def test_dropblock_small_maps_and_even_blocks(dims):
    drop = DropBlock(spatial_dims=dims, block_size=7, drop_prob=0.3).train()
    x = torch.randn(2, 3, *[4] * dims)  # block larger than the map: shrinks to it
    assert drop(x).shape == x.shape
    assert DropBlock(dims, block_size=2, drop_prob=0.3).train()(_x(dims, 2, 5)).shape == (2, 2, *[5] * dims)


@pytest.mark.parametrize("dims", [2, 3])
def test_dropblock_conv_units(dims):
    unit = DropBlockConv(3, 8, spatial_dims=dims, dropout=0.1, units=2, bias=True)
    assert [type(m).__name__ for m in unit.layers][:4] == [
        "Conv" + f"{dims}d",
        "DropBlock",
        f"BatchNorm{dims}d",
        "ReLU",
    ]
    out = unit(_x(dims, 3))
    assert out.shape == (2, 8, *[8] * dims)
    _train_step_ok(unit, out)
    unit.eval()
    x = _x(dims, 3)
    torch.testing.assert_close(unit(x), unit(x))


# ---------------------------------------------------------------------------------------------------- BlockSequence
def test_block_sequence_hands_vocabulary_and_keeps_config_keys():
    seq = BlockSequence(
        3,
        8,
        blocks=[
            functools.partial(DoubleConv, kernel_size=3),
            functools.partial(SpatialAttention, kernel_size=5),
            functools.partial(DoubleConv, norm="batch"),
        ],
        spatial_dims=2,
        stride=2,
        norm="instance",
        act="prelu",
    )
    first, sa, last = seq
    assert first.conv1[0].stride == (2, 2) and isinstance(first.conv1[1], nn.InstanceNorm2d)
    assert isinstance(first.conv1[2], nn.PReLU) and last.conv1[0].stride == (1, 1)
    assert sa.conv.kernel_size == (5, 5)  # the entry's own key wins
    assert isinstance(last.conv1[1], nn.BatchNorm2d)  # ditto for norm
    assert seq(torch.randn(2, 3, 8, 8)).shape == (2, 8, 4, 4)
    with pytest.raises(ValueError):
        BlockSequence(3, 3, blocks=[SpatialAttention], spatial_dims=2, stride=2)
    with pytest.raises(ValueError):
        BlockSequence(3, 3, blocks=[], spatial_dims=2)


# ----------------------------------------------------------------------------- every composable block config (YAML)
GROUPS = ("encoder_block", "bottleneck")
BLOCK_CONFIGS = sorted(p for g in GROUPS for p in (config_dir() / "model" / "net" / g).glob("*.yaml"))


def _block_from_yaml(path: Path, c_in: int, c_out: int, dims: int) -> nn.Module:
    factory = instantiate(OmegaConf.load(path), _convert_="all")
    return factory(in_channels=c_in, out_channels=c_out, spatial_dims=dims, norm="batch", act="relu", dropout=0.1)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("path", BLOCK_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_block_config_trains_in_2d_and_3d(path, dims):
    block = _block_from_yaml(path, 4, 8, dims)
    for name, p in block.named_parameters():
        if name.endswith("gamma"):  # attention residual scales start at 0; open them so every weight trains
            with torch.no_grad():
                p.fill_(0.1)
    out = block(_x(dims, 4, 8))
    assert out.shape == (2, 8, *[8] * dims)
    _train_step_ok(block, out)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    "path", sorted((config_dir() / "model" / "net" / "skip_gate").glob("*.yaml")), ids=lambda p: p.stem
)
def test_skip_gate_config_trains_in_2d_and_3d(path, dims):
    factory = instantiate(OmegaConf.load(path), _convert_="all")
    gate = factory(in_channels=8, gate_channels=16, spatial_dims=dims, norm="batch", act="relu")
    x = _x(dims, 8, 8)
    out = gate(x, _x(dims, 16, 4))
    assert out.shape == x.shape
    _train_step_ok(gate, out)
