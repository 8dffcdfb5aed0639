"""``model.net.channels_last``: the same function as the contiguous net, with channels-last weights and activations."""

from __future__ import annotations

import pytest
import torch

from medseg.config import build, compose_config

BASE = ["model/net=attention_unet", "model.net.channels=[4,8,16]", "data.in_channels=2", "data.num_classes=3"]


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_net_matches_the_contiguous_one(dims: int) -> None:
    nets = []
    for flag in ("true", "false"):
        torch.manual_seed(0)
        cfg = compose_config("train", [*BASE, f"model.net.spatial_dims={dims}", f"model.net.channels_last={flag}"])
        nets.append(build(cfg.model.net))
    fast, plain = nets
    fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
    assert fast.memory_format == fmt and plain.memory_format is None
    conv_weights = [p for p in fast.parameters() if p.dim() == dims + 2]
    assert conv_weights and all(p.is_contiguous(memory_format=fmt) for p in conv_weights)
    plain.load_state_dict(fast.state_dict())  # same parameters, keys and shapes
    x = torch.randn(2, 2, *(16,) * dims, generator=torch.Generator().manual_seed(1))
    y_fast, y_plain = fast(x), plain(x)
    assert y_fast.shape == (2, 3, *(16,) * dims)
    torch.testing.assert_close(y_fast, y_plain, rtol=1e-4, atol=1e-5)
    y_fast.square().mean().backward()
    y_plain.square().mean().backward()
    for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)
