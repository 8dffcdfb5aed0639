import functools

import pytest
import torch
from omegaconf import DictConfig, ListConfig
from torch import nn

from medseg.config import build, compose_config, config_dir
from medseg.nets import UNet

NET_NAMES = sorted(p.stem for p in (config_dir() / "model" / "net").glob("*.yaml"))


def test_all_network_configs_discovered():
    assert {"unet", "attention_unet", "ms_attention_unet"} <= set(NET_NAMES)


@functools.cache
def _default_net_cfg(name: str) -> DictConfig:
    return compose_config("train", [f"model/net={name}", "data.num_classes=3", "data.in_channels=1"]).model.net


def _tiny_overrides(name: str, dims: int) -> list[str]:
    """Narrow widths (4, 8, 16, ... or a ``tiny`` preset) with the variant's own depth, so every variant runs fast."""
    default = _default_net_cfg(name)
    ov = [f"model/net={name}", f"model.net.spatial_dims={dims}", "data.num_classes=3", "data.in_channels=1"]
    if default.get("channels") is not None:
        n = len(default.channels)
        ov.append(f"model.net.channels=[{','.join(str(4 * 2**i) for i in range(n))}]")
        if default.get("up_channels") is not None:
            ov.append(f"model.net.up_channels=[{','.join(['4'] * (n - 1))}]")
    elif "preset" in default:
        ov.append("model.net.preset=tiny")
    return ov


def _tiny_net(name: str, dims: int, extra: tuple[str, ...] = ()) -> nn.Module:
    cfg = compose_config("train", _tiny_overrides(name, dims) + list(extra))
    return build(cfg.model.net)


def _input(net: nn.Module, dims: int) -> torch.Tensor:
    size = 32 if dims == 2 else 16
    depth = getattr(net, "depth", None)
    if depth is not None:
        assert size % 2**depth == 0
    torch.manual_seed(0)
    return torch.randn(2, 1, *[size] * dims)  # batch 2 keeps BatchNorm valid at a 1-voxel bottleneck


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", NET_NAMES)
def test_net_config_builds_and_runs(name, dims):
    net = _tiny_net(name, dims)
    assert net.spatial_dims == dims
    x = _input(net, dims)
    size = x.shape[2:]

    net.train()
    out = net(x)
    ds = getattr(net, "deep_supervision", 0)
    if ds:
        assert isinstance(out, list) and len(out) == 1 + ds
        for i, o in enumerate(out):  # finest first, halving
            assert tuple(o.shape) == (2, 3, *[s // 2**i for s in size])
    else:
        assert isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 3, *size)
    outs = out if isinstance(out, list) else [out]
    sum(o.square().mean() for o in outs).backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} non-finite gradient"

    net.eval()
    with torch.no_grad():
        logits = net(x)
    assert isinstance(logits, torch.Tensor)
    assert tuple(logits.shape) == (2, 3, *size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NET_NAMES)
def test_eval_forward_writes_no_state(name):
    net = _tiny_net(name, 2).eval()
    x = _input(net, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        a, b = net(x), net(x)
    torch.testing.assert_close(a, b)
    after = net.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


@pytest.mark.parametrize("dims", [2, 3])
def test_unet_deep_supervision_override(dims):
    net = _tiny_net("unet", dims, ("model.net.deep_supervision=2",))
    x = _input(net, dims)
    outs = net.train()(x)
    assert isinstance(outs, list)
    assert [tuple(o.shape[2:]) for o in outs] == [tuple(s // 2**i for s in x.shape[2:]) for i in range(3)]
    assert isinstance(net.eval()(x), torch.Tensor)


def test_attention_variants_really_have_gates():
    ms = _default_net_cfg("ms_attention_unet")
    assert len(_tiny_net("attention_unet", 2).gates) == len(_default_net_cfg("attention_unet").channels) - 1
    ms_net = _tiny_net("ms_attention_unet", 2)
    assert sorted(ms_net.gates) == sorted(str(i) for i in ms.gated_levels)
    assert ms_net.pyramid is not None
    assert len(_tiny_net("unet", 2).gates) == 0


def test_ms_attention_unet_parameter_count_matches_turbolift():
    # Turbolift's public model has 8,155,591 parameters (2D, 1 in, 1 out); ours has no conv bias before BatchNorm.
    cfg = compose_config("train", ["model/net=ms_attention_unet", "data.num_classes=1", "data.in_channels=1"])
    net = build(cfg.model.net)
    assert net.spatial_dims == 2
    n = sum(p.numel() for p in net.parameters())
    assert n == pytest.approx(8_155_591, rel=0.01)
    assert n == 8_151_431


@pytest.mark.parametrize("dims", [2, 3])
def test_command_line_block_combination(dims):
    cfg = compose_config(
        "train",
        [
            "model/net=unet",
            "model/net/skip_gate=attention_same_res",
            "model/net/encoder_block=residual",
            f"model.net.spatial_dims={dims}",
            "model.net.channels=[4,8,16]",
            "data.num_classes=3",
            "data.in_channels=1",
        ],
    )
    net = build(cfg.model.net)
    from medseg.blocks import AttentionGate, ResidualBlock

    assert all(isinstance(e, ResidualBlock) for e in net.encoders)
    assert all(isinstance(d, ResidualBlock) for d in net.decoders)
    assert len(net.gates) == 2 and all(isinstance(g, AttentionGate) for g in net.gates.values())
    assert all(isinstance(g.out, nn.Identity) for g in net.gates.values())  # out_proj: false
    x = _input(net, dims)
    out = net.train()(x)
    assert tuple(out.shape) == (2, 3, *x.shape[2:])
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def _omegaconf_leaks(obj, path: str, seen: set[int]) -> list[str]:
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, (DictConfig, ListConfig)):
        return [path]
    found = []
    if isinstance(obj, functools.partial):
        found += _omegaconf_leaks(obj.args, f"{path}.args", seen)
        found += _omegaconf_leaks(obj.keywords, f"{path}.keywords", seen)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            found += _omegaconf_leaks(v, f"{path}[{k!r}]", seen)
    elif isinstance(obj, (list, tuple, set)):
        for i, v in enumerate(obj):
            found += _omegaconf_leaks(v, f"{path}[{i}]", seen)
    return found


@pytest.mark.parametrize("name", NET_NAMES)
def test_no_omegaconf_containers_leak_into_modules(name):
    net = _tiny_net(name, 2, ("model.net.act=[leakyrelu,{negative_slope:0.1}]",))
    leaks = []
    for mname, module in net.named_modules():
        for attr, value in vars(module).items():
            if attr in ("_modules", "_parameters", "_buffers"):
                continue
            leaks += _omegaconf_leaks(value, f"{mname or 'net'}.{attr}", set())
    assert leaks == []
    acts = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(a.negative_slope == pytest.approx(0.1) for a in acts)


def test_build_hands_plain_containers_to_constructors(monkeypatch):
    seen = {}
    original = UNet.__init__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(UNet, "__init__", spy)
    net = _tiny_net("ms_attention_unet", 2)
    assert isinstance(net, UNet)
    assert type(seen["channels"]) is list and seen["channels"] == [4, 8, 16, 32, 64]
    assert type(seen["gated_levels"]) is list and type(seen["up_channels"]) is list
    partial = seen["skip_gate"]
    assert isinstance(partial, functools.partial)
    assert not _omegaconf_leaks(partial, "skip_gate", set())
